//! One measured load phase (throughput, latency, answers, the client's and the servers' CPU
//! per attempt), and the ceiling measured the same way on its bare server process.

use std::{sync::Arc, time::Duration};

use tokio::process::Command;

use crate::{
    args::BenchArgs,
    ceiling::CeilingProcess,
    client::Endpoint,
    cpus::CpuSet,
    error::BenchError,
    load::{self, LoadConfig, LoadResult, Workload},
    reads::Reads,
    report::{Latency, Phase},
};

/// The load options of `args`, labelled `label`, measuring the servers `server_pids`.
pub fn load_config(args: &BenchArgs, label: &str, server_pids: Vec<u32>) -> LoadConfig {
    LoadConfig {
        connections: args.load_connections(),
        duration: Duration::from_secs_f64(args.duration),
        rate: args.rate,
        label: label.to_owned(),
        server_pids,
    }
}

/// Runs one load phase; its server CPU covers the load only (see [`Phase::set_server_cpu`]
/// to extend it).
pub async fn phase<W: Workload>(
    endpoint: &Endpoint,
    workload: Arc<W>,
    config: &LoadConfig,
) -> (LoadResult, Phase) {
    let result = load::run(endpoint, workload, config).await;
    let phase = summarise(&result);
    (result, phase)
}

/// The figures of a load run.
pub fn summarise(result: &LoadResult) -> Phase {
    let secs = result.elapsed.as_secs_f64().max(1e-9);
    let attempts = result.outcomes.total();
    let accepted = result.outcomes.ok_2xx;
    let mut phase = Phase {
        elapsed_s: secs,
        attempts,
        attempts_per_s: attempts as f64 / secs,
        accepted,
        accepted_per_s: accepted as f64 / secs,
        latency: Latency::from_histogram(&result.latency),
        outcomes: result.outcomes,
        ..Phase::default()
    };
    phase.set_client_cpu(result.spent.client, result.spent.elapsed_s);
    phase.set_server_cpu(result.spent.server, result.spent.elapsed_s);
    phase
}

/// Measures the ceiling: starts the bare server in its own process (pinned to `cpus`), drives
/// it with the load options of `args`, stops it.
pub async fn ceiling(args: &BenchArgs, cpus: Option<&CpuSet>) -> Result<Phase, BenchError> {
    eprintln!("flashsale bench: measuring the ceiling (a bare axum server in its own process)");
    let command = CeilingProcess::command(cpus)?;
    ceiling_with(command, |pid| load_config(args, "ceiling", vec![pid])).await
}

/// Measures the ceiling on the server `command` starts, with the load options `config` makes
/// for its process id.
pub async fn ceiling_with(
    command: Command,
    config: impl FnOnce(u32) -> LoadConfig,
) -> Result<Phase, BenchError> {
    let server = CeilingProcess::start(command).await?;
    let endpoint = Endpoint::from_addr(server.addr);
    let config = config(server.pid);
    let (_, p) = phase(&endpoint, Arc::new(Reads::ceiling(&endpoint)), &config).await;
    server.stop().await;
    Ok(p)
}
