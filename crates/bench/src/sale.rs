//! A scenario on a sale: spawn the server (`--spawn`) or use `--url`, open the sale, run the
//! load (buys, reads of the sale, or its live stream's subscribers: [`crate::sse`]), wait for the orders to be persisted, check the
//! guarantees, and record what it all cost the server.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::time::Instant;

use crate::{
    args::{BenchArgs, Scenario},
    check::{self, Facts, Verdict},
    client::Endpoint,
    cpu::per_request_us,
    cpus::CpuSet,
    error::BenchError,
    measure::{load_config, phase},
    prepare, procfs,
    reads::Reads,
    report::Report,
    settle, shared_redis, spawn,
    workload::Buyers,
};

/// Runs the scenario of `args` on a spawned server (pinned to `cpus`) or on `--url`.
pub async fn run(
    args: &BenchArgs,
    cpus: Option<&CpuSet>,
    report: &mut Report,
) -> Result<(), BenchError> {
    let server = if args.spawn {
        eprintln!(
            "flashsale bench: spawning flashsale dev (cheap argon2 for the bench users: \
             preparation only, the rush never hashes a password)"
        );
        Some(spawn::Server::start(&[], cpus).await?)
    } else {
        None
    };
    let result = on_server(args, report, server.as_ref()).await;
    if let Some(s) = server {
        stop(s, args).await;
    }
    result?;
    if args.compare_auth_off {
        compare_auth_off(args, cpus, report).await?;
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
async fn compare_auth_off(
    args: &BenchArgs,
    cpus: Option<&CpuSet>,
    report: &mut Report,
) -> Result<(), BenchError> {
    eprintln!("flashsale bench: the same load with customer authentication switched off");
    let server =
        spawn::Server::start(&[("FLASHSALE_GATEWAY__INSECURE_SKIP_AUTH", "true")], cpus).await?;
    let mut off = Report {
        scenario: report.scenario,
        ..Report::default()
    };
    let result = on_server(args, &mut off, Some(&server)).await;
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

/// Where the system under test is and how to reach it.
pub(crate) struct Target {
    /// The gateway.
    pub(crate) endpoint: Endpoint,
    /// Its database, for the guarantee check.
    pub(crate) database_url: Option<String>,
    /// The processes whose CPU is the server's.
    pub(crate) pids: Vec<u32>,
    /// The prepared sale.
    pub(crate) sale: i64,
}

/// Opens the sale on the spawned server or `--url`, then runs the load on it.
async fn on_server(
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
    let pids = match server.and_then(spawn::Server::pid) {
        Some(pid) => vec![pid],
        None => args.server_pids.clone(),
    };
    let sale =
        prepare::open_sale(&endpoint, &admin_email, &admin_password, stock, args.limit).await?;
    let target = Target {
        endpoint,
        database_url,
        pids,
        sale,
    };
    match args.scenario {
        Scenario::Read => reads(args, report, &target).await?,
        Scenario::Sse => crate::sse::run(args, report, &target).await?,
        _ => buys(args, report, &target).await?,
    }
    report.server_peak_rss_kib = peak_rss_kib(&target.pids);
    Ok(())
}

/// The peak RSS of the server processes together (each one's peak, summed), KiB.
fn peak_rss_kib(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| procfs::peak_rss_kib(p)).sum()
}

/// The label of the progress bar: the scenario's name.
fn label(report: &Report) -> String {
    report
        .scenario
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `read`: `--users` readers ask for the sale; nothing is bought, so the stock must be whole
/// afterwards.
async fn reads(args: &BenchArgs, report: &mut Report, target: &Target) -> Result<(), BenchError> {
    let path = format!("/api/v1/sales/{}", target.sale);
    let workload = Arc::new(Reads::new(&target.endpoint, &path, args.users));
    let config = load_config(args, &label(report), target.pids.clone());
    let (_, load) = phase(&target.endpoint, workload, &config).await;
    report.load = Some(load);
    let mut facts = Facts {
        stock: i64::try_from(report.stock).unwrap_or(i64::MAX),
        limit: i64::from(args.limit),
        // Nobody asked to buy: every reader's (zero) demand is answered.
        settled: true,
        ..Facts::default()
    };
    let mut verdict = Verdict::default();
    if let Some(db) = &target.database_url {
        facts = check::facts_from_db(db, target.sale, facts).await?;
        verdict.checked = vec!["no order was created by reading (orders table)".into()];
    } else {
        verdict.skipped = vec!["no order created by reading: give --database-url".into()];
    }
    facts.remaining = prepare::remaining(&target.endpoint, target.sale).await?;
    verdict
        .checked
        .push("remaining (GET /api/v1/sales/{id}) == stock".into());
    verdict.violations = check::judge(&facts);
    verdict.passed = verdict.violations.is_empty();
    report.guarantees = Some(verdict);
    Ok(())
}

/// `rush`, `accept`, `mixed`: prepares the users, rushes the sale, settles and checks it.
async fn buys(args: &BenchArgs, report: &mut Report, target: &Target) -> Result<(), BenchError> {
    let endpoint = &target.endpoint;
    let run_id = format!("{:x}", flashsale_storage::now_ms());
    let prep = Instant::now();
    eprintln!(
        "flashsale bench: preparing {} users and the sale",
        args.users
    );
    // The spawned server hashes passwords cheaply; a real one (production argon2) is given
    // fewer logins at once so they stay within its time budget.
    let parallelism = if report.spawned { 64 } else { 8 };
    let users = prepare::users(endpoint, &run_id, args.users, parallelism).await?;
    report.prepare_s = prep.elapsed().as_secs_f64();

    let buyers = Arc::new(Buyers::new(
        endpoint,
        target.sale,
        &run_id,
        users,
        args.limit,
    ));
    let mut redis = match &args.redis_url {
        Some(url) => Some(shared_redis::SharedRedis::connect(url).await?),
        None => None,
    };
    let redis_cpu_before = match &mut redis {
        Some(r) => Some(r.cpu_secs().await?),
        None => None,
    };
    let config = load_config(args, &label(report), target.pids.clone());
    let (result, mut load) = phase(endpoint, Arc::clone(&buyers), &config).await;
    report.settled = result.settled;

    let accepted_ids = buyers.order_ids();
    let unique_accepted = accepted_ids.iter().collect::<HashSet<_>>().len() as i64;
    let mut facts = Facts {
        stock: i64::try_from(report.stock).unwrap_or(i64::MAX),
        demand: i64::try_from(args.demand()).unwrap_or(i64::MAX),
        limit: i64::from(args.limit),
        settled: result.settled,
        accepted_ids,
        ..Facts::default()
    };
    let mut verdict = Verdict::default();
    if let Some(db) = &target.database_url {
        let s = settle::wait(db, target.sale, unique_accepted).await?;
        // What the load cost the server until its orders were persisted.
        let spent = result.meter.read();
        load.set_server_cpu(spent.server, spent.elapsed_s);
        let secs = spent.elapsed_s;
        report.orders_persisted = Some(s.orders);
        report.persisted_after_s = Some(secs);
        report.orders_persisted_per_s = Some(s.orders as f64 / secs.max(1e-9));
        if !s.drained {
            verdict
                .violations
                .push("the order queue did not drain within 60 s".to_owned());
        }
        facts = check::facts_from_db(db, target.sale, facts).await?;
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
    let redis_cpu = match (&mut redis, redis_cpu_before) {
        (Some(r), Some(before)) => Some(r.cpu_secs().await? - before),
        _ => None,
    };
    if let Ok(accepted) = u64::try_from(unique_accepted) {
        report.server_cpu_us_per_accepted =
            load.server_cpu_s.and_then(|s| per_request_us(s, accepted));
        report.redis_cpu_us_per_accepted = redis_cpu.and_then(|s| per_request_us(s, accepted));
    }
    report.load = Some(load);
    // The gateway's view of the stock may lag a moment behind the database.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        facts.remaining = prepare::remaining(endpoint, target.sale).await?;
        if facts.remaining + facts.live_units == facts.stock || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    verdict.violations.extend(check::judge(&facts));
    verdict.passed = verdict.violations.is_empty();
    report.guarantees = Some(verdict);
    Ok(())
}
