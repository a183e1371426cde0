//! Resource use read from `/proc` (Linux; elsewhere the figures are simply absent).

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// Peak resident set size (`VmHWM`) of process `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// utime + stime, in seconds, from the text of a `stat` file.
fn cpu_secs(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces; fields after its ')' are fixed.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// CPU seconds (all threads) used so far by process `pid`.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    cpu_secs(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU seconds used by this process so far, excluding threads named `exclude` (the in-process
/// ceiling server), so that only the bench client is counted.
pub fn client_cpu_secs(exclude: &str) -> Option<f64> {
    let total = cpu_secs(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let mut excluded = 0.0;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() == exclude {
                if let Some(s) = std::fs::read_to_string(task.path().join("stat"))
                    .ok()
                    .and_then(|s| cpu_secs(&s))
                {
                    excluded += s;
                }
            }
        }
    }
    Some(total - excluded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let stat = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(cpu_secs(stat), Some(3.0));
    }

    #[test]
    fn reads_own_figures() {
        assert!(peak_rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert!(client_cpu_secs("none").is_some());
        assert!(process_cpu_secs(std::process::id()).is_some_and(|s| s >= 0.0));
        assert_eq!(process_cpu_secs(u32::MAX), None);
    }
}
