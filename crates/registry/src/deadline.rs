//! Deadlines across hops.
//!
//! A gRPC client sends what is left of its budget in the `grpc-timeout` header (tonic writes
//! it from `Request::set_timeout`, and tonic's server cancels the handler when it passes). A
//! service that calls another one while serving a request reads the header with
//! [`incoming_deadline`] and gives the next hop [`pass_on`]: what remains minus a reserve for
//! its own work after the call returns. No time left means the call is not sent at all.

use std::time::Duration;

use tokio::time::Instant;

/// The gRPC header carrying the caller's remaining budget.
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// When the caller of this request stops waiting, if it said so (`grpc-timeout`).
pub fn incoming_deadline<T>(request: &tonic::Request<T>) -> Option<Instant> {
    let value = request.metadata().get(GRPC_TIMEOUT_HEADER)?.to_str().ok()?;
    Some(Instant::now() + parse_grpc_timeout(value)?)
}

/// The budget to give an outgoing call made while serving a request that must be answered by
/// `deadline`: the time remaining minus `reserve`, capped at `cap`. `None` when nothing is
/// left (do not send the call). Without a deadline (background work) the call gets `cap`.
pub fn pass_on(deadline: Option<Instant>, reserve: Duration, cap: Duration) -> Option<Duration> {
    let Some(deadline) = deadline else {
        return Some(cap);
    };
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .checked_sub(reserve)?;
    (!remaining.is_zero()).then(|| remaining.min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_in_every_unit_and_bad_values_are_refused() {
        assert_eq!(parse_grpc_timeout("500m"), Some(Duration::from_millis(500)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1M"), Some(Duration::from_secs(60)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(parse_grpc_timeout("99n"), Some(Duration::from_nanos(99)));
        for bad in ["", "m", "123", "12x", "-1m", "123456789m", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_next_hop_gets_the_rest_minus_the_reserve() {
        let reserve = Duration::from_millis(20);
        let cap = Duration::from_secs(2);
        let soon = Instant::now() + Duration::from_millis(300);
        let budget = pass_on(Some(soon), reserve, cap).unwrap_or_default();
        assert!(budget <= Duration::from_millis(280), "{budget:?}");
        assert!(budget > Duration::from_millis(200), "{budget:?}");
        // Less than the reserve left: nothing is sent.
        let nearly = Instant::now() + Duration::from_millis(10);
        assert_eq!(pass_on(Some(nearly), reserve, cap), None);
        assert_eq!(pass_on(Some(Instant::now()), Duration::ZERO, cap), None);
        // A generous caller is capped; background work gets the cap.
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(pass_on(Some(later), reserve, cap), Some(cap));
        assert_eq!(pass_on(None, reserve, cap), Some(cap));
    }
}
