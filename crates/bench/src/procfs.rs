//! Resource use read from `/proc` (Linux; elsewhere the figures are simply absent).

use std::ops::{Add, Sub};

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time of a process: in its own code (user) and in the kernel on its behalf (system:
/// system calls, and for loopback TCP most of the network stack of both ends).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    /// User seconds (`utime`).
    pub user_s: f64,
    /// System seconds (`stime`).
    pub system_s: f64,
}

impl CpuTimes {
    /// User and system together.
    pub fn total_s(&self) -> f64 {
        self.user_s + self.system_s
    }
}

impl Add for CpuTimes {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            user_s: self.user_s + other.user_s,
            system_s: self.system_s + other.system_s,
        }
    }
}

impl Sub for CpuTimes {
    type Output = Self;

    fn sub(self, earlier: Self) -> Self {
        Self {
            user_s: self.user_s - earlier.user_s,
            system_s: self.system_s - earlier.system_s,
        }
    }
}

/// Peak resident set size (`VmHWM`) of process `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resident set size now (`VmRSS`) of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// The resident set sizes now of all of `pids` together, KiB; `None` when the list is empty or
/// one of them cannot be read.
pub fn processes_rss_kib(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_kib(p)).sum()
}

/// A `kB` field of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The limit on open files (`ulimit -n`): soft and hard, `None` for unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The limit in force (the soft one).
    pub soft: Option<u64>,
    /// The most the soft limit may be raised to without privileges.
    pub hard: Option<u64>,
}

/// The open-files limit of process `pid` (`/proc/PID/limits`).
pub fn open_files_limit(pid: u32) -> Option<FileLimit> {
    parse_open_files(&std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?)
}

/// The open-files limit of this process.
pub fn own_open_files_limit() -> Option<FileLimit> {
    parse_open_files(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The `Max open files` line of a `limits` file.
fn parse_open_files(limits: &str) -> Option<FileLimit> {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    let mut fields = line.split_whitespace();
    let value = |f: &str| match f {
        "unlimited" => Some(None),
        n => n.parse().ok().map(Some),
    };
    Some(FileLimit {
        soft: value(fields.next()?)?,
        hard: value(fields.next()?)?,
    })
}

/// utime and stime from the text of a `stat` file.
fn cpu_times(stat: &str) -> Option<CpuTimes> {
    // The command name (field 2) may contain spaces; fields after its ')' are fixed.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some(CpuTimes {
        user_s: utime / TICKS_PER_SEC,
        system_s: stime / TICKS_PER_SEC,
    })
}

/// CPU time (all threads, including those that already ended) used so far by process `pid`;
/// 10 ms resolution.
pub fn process_cpu(pid: u32) -> Option<CpuTimes> {
    cpu_times(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU time used so far by all of `pids` together; `None` when the list is empty or one of
/// them cannot be read (it exited, or this is not Linux).
pub fn processes_cpu(pids: &[u32]) -> Option<CpuTimes> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .try_fold(CpuTimes::default(), |sum, &p| Some(sum + process_cpu(p)?))
}

/// CPU time used so far by this process (the bench client: since the ceiling runs in a
/// process of its own, every thread here is the client's).
pub fn own_cpu() -> Option<CpuTimes> {
    cpu_times(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let stat = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        let t = cpu_times(stat).unwrap();
        assert_eq!((t.user_s, t.system_s, t.total_s()), (2.5, 0.5, 3.0));
        assert_eq!(cpu_times("42 (x) S 1 2"), None);
    }

    #[test]
    fn times_add_and_subtract_per_part() {
        let a = CpuTimes {
            user_s: 1.0,
            system_s: 2.0,
        };
        let b = CpuTimes {
            user_s: 0.25,
            system_s: 0.5,
        };
        assert_eq!(a + b - b, a);
        assert_eq!((a - b).user_s, 0.75);
        assert_eq!((a - b).system_s, 1.5);
    }

    #[test]
    fn parses_the_open_files_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63432                63432                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(
            parse_open_files(limits),
            Some(FileLimit {
                soft: Some(1024),
                hard: Some(524_288)
            })
        );
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(
            parse_open_files(unlimited),
            Some(FileLimit {
                soft: None,
                hard: None
            })
        );
        assert_eq!(parse_open_files("Max processes 1 1 processes\n"), None);
        assert_eq!(parse_open_files("Max open files  many  1  files\n"), None);
    }

    #[test]
    fn reads_own_figures() {
        let me = std::process::id();
        assert!(peak_rss_kib(me).is_some_and(|k| k > 0));
        let rss = rss_kib(me).unwrap();
        assert!(rss > 0 && rss <= peak_rss_kib(me).unwrap());
        assert_eq!(processes_rss_kib(&[]), None);
        assert_eq!(processes_rss_kib(&[me, u32::MAX]), None);
        assert!(own_open_files_limit().is_some());
        assert_eq!(open_files_limit(me), own_open_files_limit());
        assert!(own_cpu().is_some());
        assert!(process_cpu(me).is_some_and(|t| t.user_s >= 0.0 && t.system_s >= 0.0));
        assert_eq!(process_cpu(u32::MAX), None);
        assert_eq!(processes_cpu(&[]), None);
        assert_eq!(processes_cpu(&[me, u32::MAX]), None);
        // CPU time only grows, so the pair read second is at least twice the first reading.
        let one = process_cpu(me).unwrap();
        let two = processes_cpu(&[me, me]).unwrap();
        assert!(
            two.total_s() >= 2.0 * one.total_s(),
            "{two:?} vs 2 × {one:?}"
        );
    }
}
