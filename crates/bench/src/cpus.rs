//! `--server-cpus LIST`: which CPUs the servers run on, and keeping the bench's own client off
//! them.
//!
//! Affinity is set with `taskset` (util-linux, present on every Debian/Ubuntu install), run
//! as a command, not with `sched_setaffinity(2)` through `libc`: the workspace forbids
//! `unsafe` code, and neither `libc` nor `nix` is a dependency of ours. A spawned server is
//! started as `taskset -c LIST flashsale …` (`taskset` sets the mask and execs, so the child's
//! pid is the server's own, and its runtime sizes its worker pool from that mask); the bench
//! process pins all its threads at once with `taskset -a -p -c REST PID` before the load, and
//! every thread it starts later inherits the mask of the thread that starts it.

use std::{collections::BTreeSet, fmt, path::Path, process::Stdio, str::FromStr};

use tokio::process::Command;

use crate::error::BenchError;

/// The highest CPU number a list may name (Linux's `NR_CPUS` is at most 8192).
const MAX_CPU: usize = 8191;

/// A set of CPU numbers, written as a Linux CPU list (`0`, `0-1`, `2,3`, `0-2,5`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuSet(BTreeSet<usize>);

/// Why a CPU list could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CPU list {list:?}: {why} (expected e.g. 0, 0-1 or 2,3)")]
pub struct CpuListError {
    list: String,
    why: String,
}

impl FromStr for CpuSet {
    type Err = CpuListError;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let fail = |why: String| CpuListError {
            list: list.to_owned(),
            why,
        };
        let number = |s: &str| -> Result<usize, CpuListError> {
            let s = s.trim();
            let n: usize = s
                .parse()
                .map_err(|_| fail(format!("{s:?} is not a CPU number")))?;
            if n > MAX_CPU {
                return Err(fail(format!("CPU {n} is above {MAX_CPU}")));
            }
            Ok(n)
        };
        let mut set = BTreeSet::new();
        for part in list.split(',') {
            match part.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (number(first)?, number(last)?);
                    if first > last {
                        return Err(fail(format!("range {first}-{last} runs backwards")));
                    }
                    set.extend(first..=last);
                }
                None => {
                    set.insert(number(part)?);
                }
            }
        }
        Ok(Self(set))
    }
}

impl fmt::Display for CpuSet {
    /// The canonical list: ascending, consecutive CPUs as ranges (`0-2,5`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cpus = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.next_if(|&c| c == end + 1).is_some() {
                end += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl CpuSet {
    /// How many CPUs the set holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The CPUs of `self` that are not in `other`.
    pub fn without(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }

    /// Whether every CPU of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }
}

/// The split of the machine for one run: servers on `server`, the bench client on `client`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Where the spawned server and the ceiling server run.
    pub server: CpuSet,
    /// Where the bench's own threads run: the CPUs it may use that are not the servers'.
    pub client: CpuSet,
}

/// Splits `allowed` (the CPUs the bench may run on) into the servers' `server` and the rest
/// for the client. Refused when `server` is empty, names a CPU outside `allowed`, or leaves
/// the client no CPU.
pub fn split(server: &CpuSet, allowed: &CpuSet) -> Result<Split, BenchError> {
    if server.is_empty() {
        return Err(BenchError::Usage("--server-cpus names no CPU".to_owned()));
    }
    if !server.is_subset(allowed) {
        return Err(BenchError::Usage(format!(
            "--server-cpus {server} names CPUs this process may not use (it may use {allowed})"
        )));
    }
    let client = allowed.without(server);
    if client.is_empty() {
        let hint = match allowed.0.last() {
            Some(&last) if allowed.len() > 1 => format!(
                "leave at least one for the bench's client, e.g. --server-cpus {}",
                allowed.without(&CpuSet(BTreeSet::from([last])))
            ),
            _ => "with one CPU the server and the client cannot be kept apart".to_owned(),
        };
        return Err(BenchError::Usage(format!(
            "--server-cpus {server} covers every CPU this process may use ({allowed}): {hint}"
        )));
    }
    Ok(Split {
        server: server.clone(),
        client,
    })
}

/// The CPUs process `pid` may run on (`Cpus_allowed_list` of `/proc/PID/status`); `None`
/// where `/proc` does not say (not Linux, or no such process).
pub fn allowed(pid: u32) -> Option<CpuSet> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|list| list.trim().parse().ok())
}

/// A command running `program`, pinned to `cpus` when given (`taskset -c LIST program`).
pub fn command(program: &Path, cpus: Option<&CpuSet>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus.to_string()).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// Pins every thread of this process to `cpus` (`taskset -a -p -c LIST PID`); threads started
/// afterwards inherit it.
pub async fn pin_self(cpus: &CpuSet) -> Result<(), BenchError> {
    let list = cpus.to_string();
    let output = Command::new("taskset")
        .args(["-a", "-p", "-c", &list, &std::process::id().to_string()])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| BenchError::Io("running taskset (util-linux) to pin the bench", e))?;
    if !output.status.success() {
        return Err(BenchError::Usage(format!(
            "taskset could not pin the bench to CPUs {list}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &str) -> CpuSet {
        list.parse().unwrap()
    }

    #[test]
    fn lists_parse_to_sets() {
        assert_eq!(set("0").0, BTreeSet::from([0]));
        assert_eq!(set("0-1").0, BTreeSet::from([0, 1]));
        assert_eq!(set("2,3").0, BTreeSet::from([2, 3]));
        assert_eq!(set(" 0-2, 5 ,7-7").0, BTreeSet::from([0, 1, 2, 5, 7]));
        assert_eq!(set("3,1,1-2").0, BTreeSet::from([1, 2, 3]));
    }

    #[test]
    fn bad_lists_are_refused_with_the_reason() {
        for (list, why) in [
            ("", "not a CPU number"),
            ("a", "not a CPU number"),
            ("1,", "not a CPU number"),
            ("-1", "not a CPU number"),
            ("1-", "not a CPU number"),
            ("3-1", "runs backwards"),
            ("1-2-3", "not a CPU number"),
            ("9000", "above"),
        ] {
            let e = list.parse::<CpuSet>().unwrap_err().to_string();
            assert!(e.contains(why), "{list:?}: {e}");
        }
    }

    #[test]
    fn sets_print_as_canonical_lists() {
        assert_eq!(set("0").to_string(), "0");
        assert_eq!(set("1,0").to_string(), "0-1");
        assert_eq!(set("0-2,5,7,8").to_string(), "0-2,5,7-8");
        assert_eq!(CpuSet::default().to_string(), "");
        let round = set("4,0-2,9");
        assert_eq!(round.to_string().parse::<CpuSet>().unwrap(), round);
    }

    #[test]
    fn the_client_gets_the_rest() {
        let s = split(&set("0"), &set("0-3")).unwrap();
        assert_eq!(s.client, set("1-3"));
        assert_eq!(s.server, set("0"));
        let s = split(&set("2,3"), &set("0-3")).unwrap();
        assert_eq!(s.client, set("0-1"));
    }

    #[test]
    fn a_split_leaving_the_client_nothing_is_refused() {
        let e = split(&set("0-1"), &set("0-1")).unwrap_err().to_string();
        assert!(e.contains("covers every CPU"), "{e}");
        assert!(e.contains("--server-cpus 0"), "{e}");
        let e = split(&set("0"), &set("0")).unwrap_err().to_string();
        assert!(e.contains("one CPU"), "{e}");
        let e = split(&set("2"), &set("0-1")).unwrap_err().to_string();
        assert!(e.contains("may not use"), "{e}");
        let e = split(&CpuSet::default(), &set("0-1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no CPU"), "{e}");
    }

    #[test]
    fn this_process_has_an_allowed_set() {
        let mine = allowed(std::process::id()).unwrap();
        assert!(!mine.is_empty());
        // A CPU quota may make the parallelism smaller than the mask, never larger.
        assert!(mine.len() >= std::thread::available_parallelism().unwrap().get());
        assert_eq!(allowed(u32::MAX), None);
    }
}
