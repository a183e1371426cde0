//! The ceiling server in a process of its own, started the way the bench starts it
//! ([`CeilingProcess`]), from this crate's `flashsale-bench-ceiling` binary (the bench itself
//! runs `flashsale bench ceiling-server`, the same [`ceiling::serve`]).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{path::Path, process::Stdio, time::Duration};

use flashsale_bench::{
    ceiling::{self, CeilingProcess},
    client::{Conn, Endpoint},
    cpus::{self, CpuSet},
    load::LoadConfig,
    measure,
};
use hyper::Method;
use tokio::io::{AsyncBufReadExt, BufReader};

const SERVER: &str = env!("CARGO_BIN_EXE_flashsale-bench-ceiling");

fn command(cpus: Option<&CpuSet>) -> tokio::process::Command {
    cpus::command(Path::new(SERVER), cpus)
}

#[tokio::test]
async fn it_answers_the_fixed_body_from_another_process() {
    let server = CeilingProcess::start(command(None)).await.unwrap();
    assert_ne!(server.pid, std::process::id());
    assert!(server.addr.ip().is_loopback());
    let endpoint = Endpoint::from_addr(server.addr);
    let mut conn = Conn::open(&endpoint).await.unwrap();
    for _ in 0..3 {
        let (status, body) = conn
            .send(&endpoint, &Method::GET, "/", &[], b"")
            .await
            .unwrap();
        assert_eq!(status.as_u16(), 200);
        assert_eq!(body, ceiling::BODY.as_bytes());
    }
    let (status, _) = conn
        .send(&endpoint, &Method::GET, "/other", &[], b"")
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 404);
    let pid = server.pid;
    server.stop().await;
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "still running"
    );
}

#[tokio::test]
async fn the_measured_ceiling_has_the_servers_cpu_apart_from_the_clients() {
    let phase = measure::ceiling_with(command(None), |pid| LoadConfig {
        connections: 4,
        duration: Duration::from_millis(1500),
        rate: None,
        label: "ceiling".into(),
        server_pids: vec![pid],
    })
    .await
    .unwrap();
    assert!(phase.attempts > 100, "{phase:?}");
    assert_eq!(phase.outcomes.ok_2xx, phase.attempts, "{phase:?}");
    // Thousands of answers cost the server more than one 10 ms tick, and the per-request
    // figure is that CPU over the attempts.
    let cpu = phase.server_cpu_s.unwrap();
    assert!(cpu >= 0.01, "{phase:?}");
    let per_request = phase.server_cpu_us_per_request.unwrap();
    assert!(
        (per_request - cpu * 1e6 / phase.attempts as f64).abs() < 1e-6,
        "{phase:?}"
    );
    assert!(phase.server_cpu_span_s.unwrap() >= 1.5, "{phase:?}");
    assert!(
        phase.client_cpu_us_per_request.is_some_and(|us| us > 0.0),
        "{phase:?}"
    );
}

#[tokio::test]
async fn a_pinned_ceiling_runs_on_its_cpus_only() {
    let allowed = cpus::allowed(std::process::id()).unwrap();
    let first: CpuSet = allowed
        .to_string()
        .split([',', '-'])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let server = CeilingProcess::start(command(Some(&first))).await.unwrap();
    assert_eq!(cpus::allowed(server.pid), Some(first));
    server.stop().await;
}

#[tokio::test]
async fn it_ends_when_its_stdin_closes() {
    let mut child = tokio::process::Command::new(SERVER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .unwrap()
        .unwrap();
    assert!(line.starts_with(ceiling::READY_PREFIX), "{line}");
    drop(child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("still serving 30 s after its stdin closed")
        .unwrap();
    assert!(status.success(), "{status}");
}
