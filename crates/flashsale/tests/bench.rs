//! `flashsale bench` end to end: the real binary spawns `flashsale dev`, rushes a small sale,
//! and its own guarantee check must pass, with exactly the stock accepted; reads of the sale and
//! subscribers to its live stream (`read`, `sse`) report their figures beside the bare server's.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    path::Path,
    process::{Command, Output},
};

use serde_json::Value;

/// The JSON report and stdout of a bench run that must have succeeded.
fn finished_report(output: &Output, json: &Path) -> (Value, String) {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    (report, stdout)
}

/// The spawned server's request budget (it inherits the bench's environment): at the
/// production 500 ms a buy that queues on a loaded debug build comes back 504. The bench retries
/// it with the same key, so the counts stay exact, but every 504 is a wasted round trip here.
const SPAWNED_BUDGET: (&str, &str) = ("FLASHSALE_GATEWAY__BUDGET_MS", "5000");

/// `flashsale bench ARGS --json FILE` against a server it spawns (without the environment's
/// configuration file, with [`SPAWNED_BUDGET`]): the report and stdout of a run that succeeded.
fn spawned_bench(args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .env_remove("FLASHSALE_CONFIG")
        .env(SPAWNED_BUDGET.0, SPAWNED_BUDGET.1)
        .output()
        .unwrap();
    finished_report(&output, &json)
}

#[test]
fn a_short_rush_passes_its_guarantee_check() {
    let (report, stdout) = spawned_bench(&[
        "rush",
        "--spawn",
        "--users",
        "200",
        "--stock",
        "50",
        "--connections",
        "16",
        "--duration",
        "5",
    ]);
    assert_eq!(report["load"]["accepted"], 50, "{report:#}");
    assert_eq!(report["settled"], true, "{report:#}");
    assert_eq!(report["orders_persisted"], 50, "{report:#}");
    assert_eq!(report["guarantees"]["passed"], true, "{report:#}");
    assert!(report["guarantees"]["violations"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(stdout.contains("guarantees      PASSED"), "{stdout}");
    // The spawned server did work for the accepted buys, and the report says how much.
    let cpu = report["server_cpu_us_per_accepted"].as_f64();
    assert!(cpu.is_some_and(|us| us > 0.0), "{report:#}");
    assert!(stdout.contains("µs per accepted buy"), "{stdout}");
}

/// With the stock in Redis and `--redis-url`, the report says what each accepted buy cost
/// Redis, and the spawned server's keys (under this test's prefix) are gone afterwards.
#[tokio::test]
async fn a_rush_on_redis_reports_the_redis_cpu_per_buy() {
    let Some(redis) = flashsale_redis::testing::TestRedis::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .args(["bench", "accept", "--spawn", "--users", "100", "--json"])
        .arg(&json)
        .args(["--redis-url", &redis.config.url])
        .env_remove("FLASHSALE_CONFIG")
        .env(SPAWNED_BUDGET.0, SPAWNED_BUDGET.1)
        .env("FLASHSALE_INVENTORY__STOCK", "redis")
        .env("FLASHSALE_REDIS__URL", &redis.config.url)
        .env("FLASHSALE_REDIS__KEY_PREFIX", &redis.config.key_prefix)
        .output()
        .await
        .unwrap();
    // The bench deleted what its server wrote (under this test's prefix) once it stopped it.
    let left = redis.keys(&format!("{}*", redis.config.key_prefix)).await;
    redis.cleanup().await;
    assert!(left.is_empty(), "keys left behind: {left:?}");
    let (report, stdout) = finished_report(&output, &json);
    assert_eq!(report["load"]["accepted"], 100, "{report:#}");
    let cpu = report["redis_cpu_us_per_accepted"].as_f64();
    assert!(cpu.is_some_and(|us| us > 0.0), "{report:#}");
    assert!(stdout.contains("Redis CPU"), "{stdout}");
}

/// A figure of the report that must be present, as a number.
fn number(report: &Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing in {report:#}"))
}

#[test]
fn a_short_read_answers_every_reader_and_buys_nothing() {
    let (report, stdout) = spawned_bench(&[
        "read",
        "--spawn",
        "--users",
        "20",
        "--connections",
        "4",
        "--duration",
        "1",
        "--with-ceiling",
    ]);
    let attempts = report["load"]["attempts"].as_u64().unwrap();
    assert!(attempts > 0, "{report:#}");
    // Every read was answered 200: nothing failed, nothing was refused.
    assert_eq!(report["load"]["accepted"], attempts, "{report:#}");
    assert_eq!(report["load"]["outcomes"]["ok_2xx"], attempts, "{report:#}");
    assert_eq!(report["guarantees"]["passed"], true, "{report:#}");
    assert!(stdout.contains("read (GET /api/v1/sales/{id})"), "{stdout}");
    // Measured beside the bare server: both ratios are there.
    assert!(number(&report, "/load/server_cpu_us_per_request") > 0.0);
    assert!(number(&report, "/ceiling/server_cpu_us_per_request") > 0.0);
    assert!(number(&report, "/ratio_to_ceiling") > 0.0);
    assert!(number(&report, "/server_cpu_ratio_to_ceiling") > 0.0);
    assert!(stdout.contains("summary         read:"), "{stdout}");
}

#[test]
fn sse_subscribers_see_every_change() {
    // Enough subscribers that their memory shows in the server's RSS (which grows by whole
    // pages, and first into memory the allocator already holds).
    const SUBSCRIBERS: u64 = 500;
    const CHANGES: u64 = 3;
    let (subscribers, changes) = (SUBSCRIBERS.to_string(), CHANGES.to_string());
    let (report, stdout) = spawned_bench(&[
        "sse",
        "--spawn",
        "--connections",
        &subscribers,
        "--changes",
        &changes,
        "--duration",
        "1",
        "--with-ceiling",
    ]);
    let sse = &report["sse"];
    assert_eq!(sse["subscribers"], SUBSCRIBERS, "{report:#}");
    assert_eq!(sse["changes_seen_by_all"], CHANGES, "{report:#}");
    assert_eq!(sse["events_delivered"], SUBSCRIBERS * CHANGES, "{report:#}");
    assert_eq!(sse["saw_final"], SUBSCRIBERS, "{report:#}");
    assert_eq!(sse["missed"], 0, "{report:#}");
    assert_eq!(sse["unexpected_values"], 0, "{report:#}");
    assert_eq!(sse["disconnected"], 0, "{report:#}");
    assert_eq!(report["orders_persisted"], CHANGES, "{report:#}");
    assert_eq!(report["guarantees"]["passed"], true, "{report:#}");
    assert!(number(&report, "/sse/server_rss_kib_per_subscriber") > 0.0);
    let (p50, max) = (
        number(&report, "/sse/last_seen/p50_ms"),
        number(&report, "/sse/last_seen/max_ms"),
    );
    assert!((0.0..=max).contains(&p50) && max < 30_000.0, "{report:#}");
    assert!(number(&report, "/sse/server_cpu_us_per_event") >= 0.0);
    assert!(number(&report, "/sse/server_cpu_ratio_to_ceiling") >= 0.0);
    assert!(stdout.contains("summary         sse:"), "{stdout}");
}

#[test]
fn sse_refuses_more_subscribers_than_open_files() {
    // The shell lowers the soft limit (always allowed) for the bench alone.
    let output = Command::new("sh")
        .args(["-c", "ulimit -n 1024 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_flashsale"))
        .args(["bench", "sse", "--spawn", "--connections", "1000"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the open-files limit (ulimit -n) is 1024")
            && stderr.contains("--connections 512 or fewer"),
        "{stderr}"
    );
    assert!(!stderr.contains("spawning"), "{stderr}");
}

#[test]
fn the_ceiling_runs_without_a_server() {
    let output = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .args(["bench", "ceiling", "--connections", "4", "--duration", "1"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("ceiling (bare axum, GET /)"), "{stdout}");
}

#[test]
fn bench_without_a_target_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .args(["bench", "rush"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--url"));
}
