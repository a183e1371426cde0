//! `flashsale bench`: prepares users and a sale, rushes it (closed or open loop) or reads it,
//! waits for the orders to settle, checks the guarantees against the database, and reports
//! throughput, latency and CPU per request, optionally as ratios to a bare HTTP server (the
//! ceiling) measured in its own process in the same invocation.
//!
//! Modules: [`args`] (options), [`client`] (a hand-written keep-alive HTTP/1.1 connection) and
//! [`response`] (reading its answers), [`prepare`] (users, sale), [`workload`] (who buys
//! next), [`reads`] (who reads), [`load`] (closed/open loop), [`measure`] (one measured
//! phase), [`sale`] (a scenario on a sale), [`ceiling`] (the bare server and its process),
//! [`persist`] (orders/s into the database, without HTTP), [`settle`] (queue drained),
//! [`check`] (guarantees), [`report`], [`spawn`] (`--spawn`), [`cpus`] (`--server-cpus`),
//! [`cpu`] (CPU per request) and [`procfs`] (RSS, CPU from `/proc`). The `sse` scenario:
//! [`sse`] (subscribers' memory, the fan-out of stock changes) on [`subscribers`] (the idle
//! connections to the live stream and what they saw).

pub mod args;
pub mod ceiling;
pub mod check;
pub mod client;
pub mod cpu;
pub mod cpus;
pub mod error;
pub mod load;
pub mod measure;
pub mod persist;
pub mod prepare;
pub mod procfs;
pub mod reads;
pub mod report;
pub mod response;
pub mod sale;
pub mod settle;
pub mod shared_redis;
pub mod spawn;
pub mod sse;
pub mod subscribers;
pub mod workload;

pub use args::{BenchArgs, Scenario};
pub use error::BenchError;

use crate::report::Report;

/// Runs the bench, prints the table, writes the JSON report if asked, and fails if a guarantee
/// was violated. The hidden `ceiling-server` scenario instead serves the bare ceiling server
/// until its stdin closes (the bench runs it as a child process).
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    match args.scenario {
        Scenario::Persist => return run_persist(&args).await,
        Scenario::CeilingServer => {
            ceiling::serve().await?;
            return Ok(Report::default());
        }
        _ => {}
    }
    validate(&args)?;
    // Before pinning, which leaves the bench fewer.
    let machine_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let split = match &args.server_cpus {
        Some(server) => {
            let allowed = cpus::allowed(std::process::id()).ok_or_else(|| {
                BenchError::Usage("--server-cpus needs Linux (/proc/self/status)".into())
            })?;
            let split = cpus::split(server, &allowed)?;
            cpus::pin_self(&split.client).await?;
            Some(split)
        }
        None => None,
    };
    let server_cpus = split.as_ref().map(|s| &s.server);
    let mut report = Report {
        scenario: Some(args.scenario),
        model: if args.scenario == Scenario::Sse {
            "stream"
        } else if args.rate.is_some() {
            "open"
        } else {
            "closed"
        }
        .to_owned(),
        rate: args.rate,
        connections: if args.scenario == Scenario::Sse {
            args.subscribers()
        } else {
            args.load_connections()
        },
        duration_s: args.duration,
        cpus: machine_cpus,
        server_cpus: split.as_ref().map(|s| s.server.to_string()),
        client_cpus: split.as_ref().map(|s| s.client.to_string()),
        ..Report::default()
    };
    if args.scenario == Scenario::Ceiling || args.with_ceiling {
        report.ceiling = Some(measure::ceiling(&args, server_cpus).await?);
    }
    if args.scenario != Scenario::Ceiling {
        sale::run(&args, server_cpus, &mut report).await?;
    }
    report.compare_to_ceiling();
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    match &report.guarantees {
        Some(g) if !g.passed => Err(BenchError::Guarantees(g.violations.clone())),
        _ => Ok(report),
    }
}

fn write_json(path: &std::path::Path, report: &impl serde::Serialize) -> Result<(), BenchError> {
    let json = serde_json::to_vec_pretty(report)
        .map_err(|e| BenchError::Io("encoding the report", e.into()))?;
    std::fs::write(path, json).map_err(|e| BenchError::Io("writing the JSON report", e))
}

/// `persist`: orders/s into the database, without HTTP.
async fn run_persist(args: &BenchArgs) -> Result<Report, BenchError> {
    let database_url = args
        .database_url
        .clone()
        .ok_or_else(|| BenchError::Usage("persist needs --database-url".into()))?;
    let report = persist::run(&persist::PersistArgs {
        database_url,
        orders: args.orders,
        batch: args.batch,
        nats_url: args.nats_url.clone(),
    })
    .await?;
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(Report::default())
}

fn validate(args: &BenchArgs) -> Result<(), BenchError> {
    let bad = |m: &str| Err(BenchError::Usage(m.to_owned()));
    if args.connections == Some(0) {
        return bad("--connections must be at least 1");
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return bad("--duration must be a positive number of seconds");
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return bad("--rate must be a positive number of requests per second");
    }
    if args.scenario != Scenario::Ceiling {
        if args.users == 0 || args.limit == 0 {
            return bad("--users and --limit must be at least 1");
        }
        if args.url.is_none() && !args.spawn {
            return bad("give --url URL (a running gateway) or --spawn");
        }
    }
    for &pid in &args.server_pids {
        if procfs::process_cpu(pid).is_none() {
            return Err(BenchError::Usage(format!(
                "--server-pid {pid}: no such process (or its /proc/{pid}/stat cannot be read)"
            )));
        }
    }
    if args.scenario == Scenario::Sse {
        if args.compare_auth_off {
            return bad("--compare-auth-off compares loads; sse has none (give it to rush, accept, mixed or read)");
        }
        if args.changes == 0 {
            return bad("--changes must be at least 1");
        }
        if args.stock() < args.changes as u64 {
            return bad("sse: --stock must be at least --changes (one unit is bought per change)");
        }
        sse::check_file_limits(args)?;
    }
    Ok(())
}
