//! `--server-cpus`: the bench pins itself off the servers' CPUs. Alone in its test binary,
//! since it changes the affinity of the whole test process.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use clap::Parser;
use flashsale_bench::{cpus, BenchArgs, BenchError};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

/// The CPU list of a thread, from its `status` file.
fn thread_cpus(status: &std::path::Path) -> String {
    std::fs::read_to_string(status)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_moves_every_thread_off_the_servers_cpus() {
    let allowed = cpus::allowed(std::process::id()).unwrap();

    // Every CPU for the servers leaves none for the client: refused before anything starts.
    let args = Cli::parse_from([
        "bench",
        "rush",
        "--spawn",
        "--server-cpus",
        &allowed.to_string(),
    ])
    .bench;
    let e = flashsale_bench::run(args).await.err().unwrap();
    assert!(matches!(e, BenchError::Usage(_)), "{e}");
    assert!(e.to_string().contains("covers every CPU"), "{e}");

    if allowed.len() < 2 {
        eprintln!("one CPU: nothing to split");
        return;
    }
    let first = allowed
        .to_string()
        .split([',', '-'])
        .next()
        .unwrap()
        .to_owned();
    let split = cpus::split(&first.parse().unwrap(), &allowed).unwrap();
    cpus::pin_self(&split.client).await.unwrap();
    let client = split.client.to_string();
    let mut threads = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let status = task.unwrap().path().join("status");
        assert_eq!(thread_cpus(&status), client, "{status:?}");
        threads += 1;
    }
    assert!(threads >= 3, "main and two workers, saw {threads}");
    // A thread started afterwards inherits it.
    let later =
        std::thread::spawn(|| thread_cpus(std::path::Path::new("/proc/thread-self/status")))
            .join()
            .unwrap();
    assert_eq!(later, client);
}
