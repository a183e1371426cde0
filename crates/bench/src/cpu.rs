//! CPU per request: what the measured servers (every process named, all their threads) and the
//! bench client (this process) spent over a span, and the ratios the report prints.
//!
//! Both come from `utime + stime` in `/proc/PID/stat` (10 ms resolution), read at the start
//! and the end of the span; a figure is absent where `/proc` cannot be read or no process was
//! named (`--url` without `--server-pid`).

use tokio::time::Instant;

use crate::procfs::{self, CpuTimes};

/// CPU readings taken at the start of a span.
#[derive(Debug, Clone)]
pub struct Meter {
    pids: Vec<u32>,
    server: Option<CpuTimes>,
    client: Option<CpuTimes>,
    started: Instant,
}

/// What was spent between [`Meter::start`] and [`Meter::read`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spent {
    /// CPU time of the measured server processes together.
    pub server: Option<CpuTimes>,
    /// CPU time of this process (the client).
    pub client: Option<CpuTimes>,
    /// Wall seconds of the span.
    pub elapsed_s: f64,
}

impl Meter {
    /// Starts a span measuring the processes `pids` (none: no server figure) and this one.
    pub fn start(pids: &[u32]) -> Self {
        Self {
            pids: pids.to_vec(),
            server: procfs::processes_cpu(pids),
            client: procfs::own_cpu(),
            started: Instant::now(),
        }
    }

    /// What was spent since the start.
    pub fn read(&self) -> Spent {
        let server = procfs::processes_cpu(&self.pids);
        let client = procfs::own_cpu();
        Spent {
            server: self.server.zip(server).map(|(a, b)| b - a),
            client: self.client.zip(client).map(|(a, b)| b - a),
            elapsed_s: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// CPU µs per request: `cpu_s` seconds over `requests` requests (`None` without requests).
pub fn per_request_us(cpu_s: f64, requests: u64) -> Option<f64> {
    (requests > 0 && cpu_s.is_finite() && cpu_s >= 0.0).then(|| cpu_s * 1e6 / requests as f64)
}

/// `value / base`, where both are known and `base` is positive (`None` otherwise: a ratio to
/// nothing is no figure).
pub fn ratio(value: Option<f64>, base: Option<f64>) -> Option<f64> {
    let (value, base) = (value?, base?);
    (base > 0.0 && value.is_finite() && base.is_finite()).then(|| value / base)
}

/// CPU seconds over `elapsed_s` wall seconds as % of one core.
pub fn percent_of_core(cpu_s: f64, elapsed_s: f64) -> Option<f64> {
    (elapsed_s > 0.0).then(|| cpu_s / elapsed_s * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_request_is_micros_over_requests() {
        assert_eq!(per_request_us(1.0, 1_000_000), Some(1.0));
        assert_eq!(per_request_us(0.5, 20_000), Some(25.0));
        assert_eq!(per_request_us(0.0, 10), Some(0.0));
        assert_eq!(per_request_us(1.0, 0), None);
        assert_eq!(per_request_us(f64::NAN, 10), None);
        assert_eq!(per_request_us(-0.01, 10), None);
    }

    #[test]
    fn ratios_need_a_positive_base() {
        // 35.2 µs against the bare server's 8.6 µs: 4.09 ×.
        let r = ratio(Some(35.2), Some(8.6)).unwrap();
        assert!((r - 4.093).abs() < 0.001, "{r}");
        assert_eq!(ratio(Some(21_300.0), Some(71_000.0)), Some(0.3));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(Some(1.0), Some(-1.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(f64::INFINITY), Some(1.0)), None);
    }

    #[test]
    fn percent_of_one_core() {
        assert_eq!(percent_of_core(1.5, 3.0), Some(50.0));
        assert_eq!(percent_of_core(1.0, 0.0), None);
    }

    #[test]
    fn a_meter_sees_this_process_work() {
        let me = std::process::id();
        let meter = Meter::start(&[me]);
        // Burn CPU until /proc shows at least two ticks (10 ms each) more.
        let start = procfs::own_cpu().unwrap().total_s();
        let mut x = 0u64;
        while procfs::own_cpu().unwrap().total_s() < start + 0.02 {
            for i in 0..100_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
        }
        std::hint::black_box(x);
        let spent = meter.read();
        assert!(
            spent.client.is_some_and(|t| t.total_s() >= 0.02),
            "{spent:?}"
        );
        // The server here is this process too: the same work.
        assert!(
            spent.server.is_some_and(|t| t.total_s() >= 0.02),
            "{spent:?}"
        );
        assert!(spent.elapsed_s > 0.0);
        assert_eq!(Meter::start(&[]).read().server, None);
    }
}
