//! Durations as configuration writes them and as tables store them.
//!
//! Configuration spells every interval as a whole number of milliseconds (`*_ms: u64`, or
//! seconds for the long ones; `Duration::from_millis` reads those), while the tables and the
//! clock count `i64` milliseconds. These helpers convert to the latter without overflow: a value too large for `i64`
//! saturates (an interval that long means "never" everywhere it is used), so no caller writes
//! `i64::try_from(..).unwrap_or(i64::MAX)` again.

use std::time::Duration;

/// A configured number of milliseconds as table milliseconds (saturating).
pub fn ms_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A configured number of seconds as table milliseconds (saturating).
pub fn secs_as_ms_i64(secs: u64) -> i64 {
    ms_i64(secs.saturating_mul(1000))
}

/// A [`Duration`] as table milliseconds (saturating).
pub fn as_ms_i64(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate_instead_of_wrapping() {
        assert_eq!(ms_i64(30_000), 30_000);
        assert_eq!(ms_i64(u64::MAX), i64::MAX);
        assert_eq!(secs_as_ms_i64(900), 900_000);
        assert_eq!(secs_as_ms_i64(u64::MAX), i64::MAX);
        assert_eq!(as_ms_i64(Duration::from_secs(2)), 2_000);
        assert_eq!(as_ms_i64(Duration::MAX), i64::MAX);
    }
}
