//! `flashsale bench`: prepares users and a sale, rushes it (closed or open loop), waits for the
//! orders to settle, checks the guarantees against the database, and reports throughput and
//! latency, optionally as a ratio to a bare-HTTP ceiling measured in the same invocation.
//!
//! Modules: [`args`] (options), [`client`] (one keep-alive HTTP/1.1 connection), [`prepare`]
//! (users, sale), [`workload`] (who buys next), [`load`] (closed/open loop), [`ceiling`] (bare
//! server), [`persist`] (orders/s into the database, without HTTP), [`settle`] (queue drained), [`check`] (guarantees), [`report`], [`spawn`]
//! (`--spawn`), [`procfs`] (RSS, CPU).

pub mod args;
pub mod ceiling;
pub mod check;
pub mod client;
pub mod error;
pub mod load;
pub mod persist;
pub mod prepare;
pub mod procfs;
pub mod report;
pub mod settle;
pub mod shared_redis;
pub mod spawn;
pub mod workload;

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::time::Instant;

pub use args::{BenchArgs, Scenario};
pub use error::BenchError;

use crate::{
    ceiling::{Ceiling, CeilingServer},
    check::{Facts, Verdict},
    client::Endpoint,
    load::{LoadConfig, LoadResult, Workload},
    report::{Latency, Phase, Report},
    workload::Buyers,
};

/// Runs the bench, prints the table, writes the JSON report if asked, and fails if a guarantee
/// was violated.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    if args.scenario == Scenario::Persist {
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
            let json = serde_json::to_vec_pretty(&report)
                .map_err(|e| BenchError::Io("encoding the report", e.into()))?;
            std::fs::write(path, json).map_err(|e| BenchError::Io("writing the JSON report", e))?;
        }
        return Ok(Report::default());
    }
    validate(&args)?;
    let mut report = Report {
        scenario: Some(args.scenario),
        model: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        }
        .to_owned(),
        rate: args.rate,
        connections: args.connections,
        duration_s: args.duration,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ..Report::default()
    };
    if args.scenario == Scenario::Ceiling || args.with_ceiling {
        report.ceiling = Some(measure_ceiling(&args).await?);
    }
    if args.scenario != Scenario::Ceiling {
        rush(&args, &mut report).await?;
    }
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)
            .map_err(|e| BenchError::Io("encoding the report", e.into()))?;
        std::fs::write(path, json).map_err(|e| BenchError::Io("writing the JSON report", e))?;
    }
    match &report.guarantees {
        Some(g) if !g.passed => Err(BenchError::Guarantees(g.violations.clone())),
        _ => Ok(report),
    }
}

fn validate(args: &BenchArgs) -> Result<(), BenchError> {
    let bad = |m: &str| Err(BenchError::Usage(m.to_owned()));
    if args.connections == 0 {
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
    Ok(())
}

fn load_config(args: &BenchArgs, label: &str) -> LoadConfig {
    LoadConfig {
        connections: args.connections,
        duration: Duration::from_secs_f64(args.duration),
        rate: args.rate,
        label: label.to_owned(),
    }
}

/// Runs one load phase and measures the client's own CPU over it.
async fn phase<W: Workload>(
    endpoint: &Endpoint,
    workload: Arc<W>,
    config: &LoadConfig,
) -> (LoadResult, Phase) {
    let cpu_before = procfs::client_cpu_secs(ceiling::THREAD_NAME);
    let result = load::run(endpoint, workload, config).await;
    let cpu_after = procfs::client_cpu_secs(ceiling::THREAD_NAME);
    let secs = result.elapsed.as_secs_f64().max(1e-9);
    let attempts = result.outcomes.total();
    let accepted = result.outcomes.ok_2xx;
    let phase = Phase {
        elapsed_s: secs,
        attempts,
        attempts_per_s: attempts as f64 / secs,
        accepted,
        accepted_per_s: accepted as f64 / secs,
        latency: Latency::from_histogram(&result.latency),
        outcomes: result.outcomes,
        client_cpu_pct: cpu_before
            .zip(cpu_after)
            .map(|(a, b)| (b - a) / secs * 100.0),
    };
    (result, phase)
}

async fn measure_ceiling(args: &BenchArgs) -> Result<Phase, BenchError> {
    let server = CeilingServer::start()?;
    let endpoint = Endpoint::from_addr(server.addr);
    let (_, p) = phase(
        &endpoint,
        Ceiling::new(endpoint.clone()),
        &load_config(args, "ceiling"),
    )
    .await;
    drop(server);
    Ok(p)
}

/// Prepares, rushes, settles and checks a sale.
async fn rush(args: &BenchArgs, report: &mut Report) -> Result<(), BenchError> {
    let server = if args.spawn {
        eprintln!(
            "flashsale bench: spawning flashsale dev (cheap argon2 for the bench users: \
             preparation only, the rush never hashes a password)"
        );
        Some(spawn::Server::start(&[]).await?)
    } else {
        None
    };
    let result = rush_on(args, report, server.as_ref()).await;
    if let Some(s) = server {
        stop(s, args).await;
    }
    result?;
    if args.compare_auth_off {
        compare_auth_off(args, report).await?;
    }
    Ok(())
}

/// Stops a spawned server and, with `--redis-url`, deletes the keys it left in Redis (a failure
/// to delete is reported and does not fail the run: the figures stand).
async fn stop(server: spawn::Server, args: &BenchArgs) {
    let prefix = server.key_prefix.clone();
    server.stop().await;
    let Some(url) = &args.redis_url else { return };
    let deleted = match shared_redis::SharedRedis::connect(url).await {
        Ok(mut redis) => redis.delete_prefix(&prefix).await,
        Err(e) => Err(e),
    };
    match deleted {
        Ok(n) => {
            eprintln!("flashsale bench: deleted the spawned server's {n} Redis keys ({prefix}*)")
        }
        Err(e) => {
            eprintln!("flashsale bench: could not delete the spawned server's keys {prefix}*: {e}");
        }
    }
}

/// Runs the same load on a fresh server whose gateway skips customer authentication, and
/// records it beside the authenticated run (its guarantees are checked too).
async fn compare_auth_off(args: &BenchArgs, report: &mut Report) -> Result<(), BenchError> {
    eprintln!("flashsale bench: the same load with customer authentication switched off");
    let server = spawn::Server::start(&[("FLASHSALE_GATEWAY__INSECURE_SKIP_AUTH", "true")]).await?;
    let mut off = Report {
        scenario: report.scenario,
        ..Report::default()
    };
    let result = rush_on(args, &mut off, Some(&server)).await;
    stop(server, args).await;
    result?;
    if let (Some(with), Some(without)) = (&report.load, &off.load) {
        report.ratio_to_auth_off =
            Some(with.attempts_per_s / without.attempts_per_s.max(f64::MIN_POSITIVE));
    }
    report.auth_off = off.load;
    if let (Some(verdict), Some(off_verdict)) = (&mut report.guarantees, off.guarantees) {
        verdict.violations.extend(
            off_verdict
                .violations
                .into_iter()
                .map(|v| format!("auth-off run: {v}")),
        );
        verdict.passed = verdict.violations.is_empty();
    }
    Ok(())
}

async fn rush_on(
    args: &BenchArgs,
    report: &mut Report,
    server: Option<&spawn::Server>,
) -> Result<(), BenchError> {
    let (url, database_url) = match server {
        Some(s) => (s.url.clone(), Some(s.database_url.clone())),
        None => (
            args.url.clone().unwrap_or_default(),
            args.database_url.clone(),
        ),
    };
    let (admin_email, admin_password) = match server {
        Some(_) => (
            spawn::ADMIN_EMAIL.to_owned(),
            spawn::ADMIN_PASSWORD.to_owned(),
        ),
        None => (
            args.admin_email
                .clone()
                .ok_or_else(|| BenchError::Usage("--admin-email is needed with --url".into()))?,
            args.admin_password
                .clone()
                .ok_or_else(|| BenchError::Usage("--admin-password is needed with --url".into()))?,
        ),
    };
    let endpoint = Endpoint::parse(&url).await?;
    let stock = args.stock();
    report.users = args.users;
    report.stock = stock;
    report.limit = args.limit;
    report.spawned = server.is_some();

    let run_id = format!("{:x}", flashsale_storage::now_ms());
    let prep = Instant::now();
    eprintln!(
        "flashsale bench: preparing {} users and the sale",
        args.users
    );
    let sale =
        prepare::open_sale(&endpoint, &admin_email, &admin_password, stock, args.limit).await?;
    // The spawned server hashes passwords cheaply; a real one (production argon2) is given
    // fewer logins at once so they stay within its time budget.
    let parallelism = if server.is_some() { 64 } else { 8 };
    let users = prepare::users(&endpoint, &run_id, args.users, parallelism).await?;
    report.prepare_s = prep.elapsed().as_secs_f64();

    let buyers = Arc::new(Buyers::new(
        endpoint.clone(),
        sale,
        &run_id,
        users,
        args.limit,
    ));
    let label = report
        .scenario
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let server_pid = server.and_then(spawn::Server::pid);
    let server_cpu_before = server_pid.and_then(procfs::process_cpu_secs);
    let mut redis = match &args.redis_url {
        Some(url) => Some(shared_redis::SharedRedis::connect(url).await?),
        None => None,
    };
    let redis_cpu_before = match &mut redis {
        Some(r) => Some(r.cpu_secs().await?),
        None => None,
    };
    let started = Instant::now();
    let (result, load) = phase(&endpoint, Arc::clone(&buyers), &load_config(args, &label)).await;
    report.settled = result.settled;
    report.ratio_to_ceiling = report
        .ceiling
        .as_ref()
        .filter(|c| c.attempts_per_s > 0.0)
        .map(|c| load.attempts_per_s / c.attempts_per_s);
    report.load = Some(load);

    let accepted_ids = buyers.order_ids();
    let unique_accepted = accepted_ids.iter().collect::<HashSet<_>>().len() as i64;
    let mut facts = Facts {
        stock: i64::try_from(stock).unwrap_or(i64::MAX),
        demand: i64::try_from(args.demand()).unwrap_or(i64::MAX),
        limit: i64::from(args.limit),
        settled: result.settled,
        accepted_ids,
        ..Facts::default()
    };
    let mut verdict = Verdict::default();
    if let Some(db) = &database_url {
        let s = settle::wait(db, sale, unique_accepted).await?;
        let secs = s.at.duration_since(started).as_secs_f64();
        report.orders_persisted = Some(s.orders);
        report.persisted_after_s = Some(secs);
        report.orders_persisted_per_s = Some(s.orders as f64 / secs.max(1e-9));
        if !s.drained {
            verdict
                .violations
                .push("the order queue did not drain within 60 s".to_owned());
        }
        facts = check::facts_from_db(db, sale, facts).await?;
        verdict.checked = vec![
            "sold units == min(stock, demand) when every user got a final answer; never above stock".into(),
            "no user above the per-user limit (orders table)".into(),
            "no two orders for one (user, idempotency key)".into(),
            "every order id answered 202 is in the orders table".into(),
            "remaining (GET /api/v1/sales/{id}) + sold == stock".into(),
        ];
    } else {
        facts.live_units = unique_accepted;
        facts.stored_ids = facts.accepted_ids.iter().cloned().collect();
        verdict.checked = vec![
            "remaining (GET /api/v1/sales/{id}) + orders answered 202 == stock".into(),
            "orders answered 202 == min(stock, demand) when settled".into(),
        ];
        verdict.skipped = vec![
            "database checks (per-user limit, duplicate keys, 202 ids persisted): give --database-url"
                .into(),
        ];
    }
    // What the load cost, until its orders were persisted (or until it ended, without a
    // database to watch).
    let server_cpu = server_cpu_before
        .zip(server_pid.and_then(procfs::process_cpu_secs))
        .map(|(before, after)| after - before);
    let redis_cpu = match (&mut redis, redis_cpu_before) {
        (Some(r), Some(before)) => Some(r.cpu_secs().await? - before),
        _ => None,
    };
    let per_accepted = |secs: f64| secs * 1e6 / unique_accepted as f64;
    if unique_accepted > 0 {
        report.server_cpu_us_per_accepted = server_cpu.map(per_accepted);
        report.redis_cpu_us_per_accepted = redis_cpu.map(per_accepted);
    }
    // The gateway's view of the stock may lag a moment behind the database.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        facts.remaining = prepare::remaining(&endpoint, sale).await?;
        if facts.remaining + facts.live_units == facts.stock || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    verdict.violations.extend(check::judge(&facts));
    verdict.passed = verdict.violations.is_empty();
    report.guarantees = Some(verdict);
    report.server_peak_rss_kib = server.and_then(|s| s.pid()).and_then(procfs::peak_rss_kib);
    Ok(())
}
