//! `sse`: the sale's live stream (`GET /api/v1/sales/{id}/events`) under many idle subscribers.
//!
//! 1. **Memory**: the server's RSS (every process measured) before the subscribers connect and
//!    once every one of them has its first event; the difference over their number is what an
//!    idle subscriber costs the server (its user-space memory: the kernel's socket buffers are
//!    not in RSS).
//! 2. **Fan-out**: `--changes` buys, one unit each by a prepared user (the buy path of the other
//!    scenarios, [`Buyers`]); after each `202` the bench waits, on the events themselves, until
//!    every subscriber saw the new `remaining`, and only then buys again, so each buy is a feed
//!    update of its own. Per change: the time from the `202` until the last subscriber saw it
//!    (0 when that was before the `202`); over the phase: the server's CPU per event delivered
//!    to one subscriber, and its multiple of the bare server's CPU per request.
//! 3. **Guarantees**: every subscriber saw the final `remaining`, none was disconnected, the
//!    stock moved only by the bench's buys, and the usual order checks.
//!
//! The subscribers run in the bench's process ([`crate::subscribers`]), so it needs one open
//! file per subscriber, and so does the server: [`check_file_limits`] refuses a run the
//! `ulimit -n` cannot hold.

use std::{collections::HashSet, fmt::Write as _, sync::Arc, time::Duration};

use hyper::StatusCode;
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    args::BenchArgs,
    check::{self, Facts, Verdict},
    client::Conn,
    cpu::{per_request_us, percent_of_core, Meter},
    error::BenchError,
    load::Workload,
    prepare, procfs,
    report::Report,
    sale::Target,
    settle,
    subscribers::{self, Tally},
    workload::Buyers,
};

/// Open files kept for the bench's (and the spawned server's) own use besides the subscribers.
pub const FILE_MARGIN: u64 = 512;
/// Longest wait for every subscriber's first event.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for every subscriber to see one change.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at one buy answered `429`, `5xx` or not at all.
const BUY_ATTEMPTS: u32 = 20;

/// The median and the largest of a few durations, ms.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Spread {
    /// Median (the lower of the middle two).
    pub p50_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Spread {
    /// The spread of `durations`; `None` when there are none.
    pub fn of(durations: &[Duration]) -> Option<Self> {
        let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Some(Self {
            p50_ms: *ms.get((ms.len().checked_sub(1)?) / 2)?,
            max_ms: *ms.last()?,
        })
    }
}

/// What `sse` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SseFigures {
    /// Subscribers asked for (`--connections`).
    pub subscribers: usize,
    /// Seconds until every subscriber had its first event.
    pub subscribe_s: f64,
    /// Server RSS before the subscribers connected, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Server RSS once every subscriber had its first event, KiB.
    pub server_rss_after_kib: Option<u64>,
    /// What the subscribers added to the server's RSS, KiB.
    pub server_rss_added_kib: Option<i64>,
    /// The same per subscriber, KiB.
    pub server_rss_kib_per_subscriber: Option<f64>,
    /// Stock changes asked for (`--changes`).
    pub changes: usize,
    /// Changes every subscriber saw (the fan-out stops at the first one some did not see).
    pub changes_seen_by_all: usize,
    /// Events delivered over the fan-out: subscribers that saw each change, summed.
    pub events_delivered: u64,
    /// Changes a subscriber jumped over (it saw a later one first), summed over them.
    pub missed: u64,
    /// `remaining` values the bench's buys cannot explain.
    pub unexpected_values: u64,
    /// Subscribers whose stream ended or failed after their first event.
    pub disconnected: usize,
    /// Subscribers that saw the final `remaining` (stock − changes).
    pub saw_final: usize,
    /// Each buy, sent until its `202`.
    pub buy: Option<Spread>,
    /// From a buy's `202` until the first subscriber saw the change.
    pub first_seen: Option<Spread>,
    /// From a buy's `202` until the last subscriber saw the change: the fan-out latency.
    pub last_seen: Option<Spread>,
    /// Wall seconds of the fan-out phase (buys and deliveries).
    pub fanout_s: f64,
    /// Server CPU over the fan-out phase, seconds.
    pub server_cpu_s: Option<f64>,
    /// Server CPU per event delivered to one subscriber, µs.
    pub server_cpu_us_per_event: Option<f64>,
    /// The part of it in the server's own code (user time), µs.
    pub server_cpu_user_us_per_event: Option<f64>,
    /// The bench's CPU (its subscribers reading) per event delivered, µs.
    pub client_cpu_us_per_event: Option<f64>,
    /// Server CPU per event as a multiple of the bare server's CPU per request.
    pub server_cpu_ratio_to_ceiling: Option<f64>,
}

impl SseFigures {
    /// Appends the human rows of the figures to `out`.
    pub fn rows(&self, out: &mut String) {
        let mib =
            |k: Option<u64>| k.map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        let spread = |s: Option<Spread>| {
            s.map_or("-".to_owned(), |s| {
                format!("p50 {:.1} ms, max {:.1} ms", s.p50_ms, s.max_ms)
            })
        };
        let opt = |v: Option<f64>, d: usize| v.map_or("-".to_owned(), |v| format!("{v:.d$}"));
        let _ = writeln!(
            out,
            "sse (GET /api/v1/sales/{{id}}/events): {} idle subscribers, all with their first \
             event after {:.2} s",
            self.subscribers, self.subscribe_s
        );
        let _ = writeln!(
            out,
            "  server RSS      {} before, {} with the subscribers: +{}, {} KiB per idle subscriber",
            mib(self.server_rss_before_kib),
            mib(self.server_rss_after_kib),
            mib(self.server_rss_added_kib.map(|k| k.max(0).unsigned_abs())),
            opt(self.server_rss_kib_per_subscriber, 2)
        );
        let _ = writeln!(
            out,
            "  fan-out         {} of {} changes seen by every subscriber; from the buy's 202 \
             until the last saw it {} (the first: {}); the buy {}",
            self.changes_seen_by_all,
            self.changes,
            spread(self.last_seen),
            spread(self.first_seen),
            spread(self.buy)
        );
        match self.server_cpu_s {
            Some(cpu) => {
                let _ = writeln!(
                    out,
                    "  server CPU      {cpu:.2} s over {:.2} s ({}% of one core), {} µs per \
                     event per subscriber ({} in its own code)",
                    self.fanout_s,
                    opt(percent_of_core(cpu, self.fanout_s), 0),
                    opt(self.server_cpu_us_per_event, 2),
                    opt(self.server_cpu_user_us_per_event, 2)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "  server CPU      - (not measured: --spawn, or --server-pid with --url)"
                );
            }
        }
        let _ = writeln!(
            out,
            "  client CPU      {} µs per event (the bench's subscribers reading)",
            opt(self.client_cpu_us_per_event, 2)
        );
        let _ = writeln!(
            out,
            "  delivered       {} events; missed {}, unexpected values {}, disconnected {}, saw \
             the final remaining {} of {}",
            self.events_delivered,
            self.missed,
            self.unexpected_values,
            self.disconnected,
            self.saw_final,
            self.subscribers
        );
    }
}

/// Refuses (a usage error) a run whose subscribers the open-files limit cannot hold: the bench
/// opens one socket per subscriber and the gateway accepts one, and a spawned server inherits the
/// bench's limit. With `--server-pid`, a process whose own limit looks too low gets a warning
/// (it may not be the gateway).
pub fn check_file_limits(args: &BenchArgs) -> Result<(), BenchError> {
    let n = args.subscribers();
    let need = n as u64 + FILE_MARGIN;
    let Some(limit) = procfs::own_open_files_limit() else {
        eprintln!(
            "flashsale bench: cannot read the open-files limit (/proc/self/limits); {n} \
             subscribers need about {need}"
        );
        return Ok(());
    };
    if let Some(soft) = limit.soft.filter(|&soft| soft < need) {
        let fits = soft.saturating_sub(FILE_MARGIN);
        let how = match limit.hard {
            Some(hard) if hard < need => format!(
                "the hard limit is {hard} too, so only root can raise it (limits.conf, systemd \
                 LimitNOFILE)"
            ),
            hard => format!(
                "raise it in the shell first (`ulimit -n {need}`; the hard limit is {})",
                hard.map_or("unlimited".to_owned(), |h| h.to_string())
            ),
        };
        let fewer = if fits > 0 {
            format!(", or give --connections {fits} or fewer")
        } else {
            String::new()
        };
        return Err(BenchError::Usage(format!(
            "sse: {n} subscribers need about {need} open files in the bench (and as many in the \
             server, which --spawn starts with the bench's limit), but the open-files limit \
             (ulimit -n) is {soft}: {how}{fewer}"
        )));
    }
    for &pid in &args.server_pids {
        if let Some(soft) = procfs::open_files_limit(pid).and_then(|l| l.soft) {
            if soft < need {
                eprintln!(
                    "flashsale bench: warning: --server-pid {pid} may open at most {soft} files: \
                     if it is the gateway, it cannot hold {n} subscribers"
                );
            }
        }
    }
    Ok(())
}

/// Buys one unit as the next prepared user, retrying `429`, `5xx` and lost answers with the same
/// key; returns when it was sent and when its `202` came.
async fn buy(conn: &mut Conn, buyers: &Buyers) -> Result<(Instant, Instant), BenchError> {
    let mut request = Vec::with_capacity(1024);
    let mut last = String::new();
    for attempt in 1..=BUY_ATTEMPTS {
        request.clear();
        let Some(user) = buyers.next(&mut request) else {
            return Err(BenchError::Stream(
                "no prepared user is left to buy".to_owned(),
            ));
        };
        let sent = Instant::now();
        match conn.exchange(&request).await {
            Ok(answer) => {
                let (status, answered) = (answer.status, Instant::now());
                last = format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
                );
                buyers.answered(user, status, answer.body);
                match status {
                    StatusCode::ACCEPTED => return Ok((sent, answered)),
                    StatusCode::CONFLICT => {
                        return Err(BenchError::Stream(format!(
                            "a buy was refused ({last}): is the sale someone else's too?"
                        )))
                    }
                    _ => {}
                }
            }
            Err(e) => {
                last = e.to_string();
                buyers.abandoned(user);
            }
        }
        // Backoff before the retry (not a synchronisation: the answer is awaited above).
        tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
    }
    Err(BenchError::Stream(format!(
        "a buy was not accepted in {BUY_ATTEMPTS} attempts (last: {last})"
    )))
}

/// What the fan-out phase saw.
#[derive(Debug, Default)]
struct Fanout {
    buy: Vec<Duration>,
    first: Vec<Duration>,
    last: Vec<Duration>,
    /// The change not every subscriber saw within [`CHANGE_TIMEOUT`], if one.
    stalled: Option<usize>,
}

/// Buys `changes` times, each once every subscriber saw the previous state.
async fn fan_out(
    conn: &mut Conn,
    buyers: &Buyers,
    tally: &Tally,
    changes: usize,
) -> Result<Fanout, BenchError> {
    let mut f = Fanout::default();
    for round in 1..=changes {
        let (sent, answered) = buy(conn, buyers).await?;
        f.buy.push(answered - sent);
        if !tally.wait_round(round, CHANGE_TIMEOUT).await {
            f.stalled = Some(round);
            break;
        }
        if let Some(seen) = tally.times(round) {
            let answered = answered.into_std();
            f.first.push(seen.first.saturating_duration_since(answered));
            f.last.push(seen.last.saturating_duration_since(answered));
        }
    }
    Ok(f)
}

/// Runs `sse` on the sale of `target`.
pub(crate) async fn run(
    args: &BenchArgs,
    report: &mut Report,
    target: &Target,
) -> Result<(), BenchError> {
    let endpoint = &target.endpoint;
    let (n, changes) = (args.subscribers(), args.changes);
    let stock = i64::try_from(report.stock).unwrap_or(i64::MAX);
    let run_id = format!("{:x}", flashsale_storage::now_ms());
    let prep = Instant::now();
    eprintln!("flashsale bench: preparing {changes} buyers (one per change)");
    let parallelism = if report.spawned { 64 } else { 8 };
    let users = prepare::users(endpoint, &run_id, changes, parallelism).await?;
    report.users = changes;
    report.prepare_s = prep.elapsed().as_secs_f64();
    let buyers = Buyers::new(endpoint, target.sale, &run_id, users, args.limit);
    let mut conn = Conn::open(endpoint).await?;

    let mut figures = SseFigures {
        subscribers: n,
        changes,
        server_rss_before_kib: procfs::processes_rss_kib(&target.pids),
        ..SseFigures::default()
    };
    eprintln!("flashsale bench: opening {n} subscribers to the sale's live stream");
    let path = format!("/api/v1/sales/{}/events", target.sale);
    let tally = Arc::new(Tally::new(stock, changes, n));
    let started = Instant::now();
    let mut set = subscribers::open(endpoint, &path, n, &tally);
    if !tally.wait_round(0, SUBSCRIBE_TIMEOUT).await {
        set.shutdown().await;
        return Err(BenchError::Stream(format!(
            "{} of {n} subscribers got their first event (within {} s); {} failed{}",
            tally.seen(0),
            SUBSCRIBE_TIMEOUT.as_secs(),
            tally.failed() + tally.disconnected(),
            tally
                .first_error()
                .map(|e| format!(", the first: {e}"))
                .unwrap_or_default()
        )));
    }
    figures.subscribe_s = started.elapsed().as_secs_f64();
    figures.server_rss_after_kib = procfs::processes_rss_kib(&target.pids);
    if let (Some(before), Some(after)) =
        (figures.server_rss_before_kib, figures.server_rss_after_kib)
    {
        let added = i64::try_from(after).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(0);
        figures.server_rss_added_kib = Some(added);
        figures.server_rss_kib_per_subscriber = Some(added as f64 / n as f64);
    }

    eprintln!(
        "flashsale bench: {changes} stock changes, each seen by every subscriber before the next"
    );
    let meter = Meter::start(&target.pids);
    let fanout = fan_out(&mut conn, &buyers, &tally, changes).await;
    let spent = meter.read();
    // Read before the subscribers are stopped: stopping them is no disconnection.
    figures.saw_final = tally.seen(changes);
    figures.disconnected = tally.disconnected();
    figures.missed = tally.missed();
    figures.unexpected_values = tally.unexpected();
    let first_error = tally.first_error();
    set.shutdown().await;
    let fanout = fanout?;

    figures.changes_seen_by_all = fanout.last.len();
    figures.events_delivered = (1..=changes).map(|r| tally.seen(r) as u64).sum();
    figures.buy = Spread::of(&fanout.buy);
    figures.first_seen = Spread::of(&fanout.first);
    figures.last_seen = Spread::of(&fanout.last);
    figures.fanout_s = spent.elapsed_s;
    figures.server_cpu_s = spent.server.map(|t| t.total_s());
    figures.server_cpu_us_per_event = spent
        .server
        .and_then(|t| per_request_us(t.total_s(), figures.events_delivered));
    figures.server_cpu_user_us_per_event = spent
        .server
        .and_then(|t| per_request_us(t.user_s, figures.events_delivered));
    figures.client_cpu_us_per_event = spent
        .client
        .and_then(|t| per_request_us(t.total_s(), figures.events_delivered));

    let mut verdict = Verdict {
        checked: vec![
            format!("every subscriber saw the final remaining (stock {stock} - {changes} changes)"),
            "no subscriber was disconnected".into(),
            "every change was seen by every subscriber within 30 s of its buy".into(),
            "remaining only took values the bench's buys explain".into(),
        ],
        ..Verdict::default()
    };
    if figures.saw_final < n {
        verdict.violations.push(format!(
            "{} of {n} subscribers saw the final remaining {}",
            figures.saw_final,
            stock - changes as i64
        ));
    }
    if figures.disconnected > 0 {
        verdict.violations.push(format!(
            "{} subscribers were disconnected{}",
            figures.disconnected,
            first_error
                .map(|e| format!(" (the first: {e})"))
                .unwrap_or_default()
        ));
    }
    if let Some(round) = fanout.stalled {
        verdict.violations.push(format!(
            "change {round}: {} of {n} subscribers saw it within {} s",
            tally.seen(round),
            CHANGE_TIMEOUT.as_secs()
        ));
    }
    if figures.unexpected_values > 0 {
        verdict.violations.push(format!(
            "subscribers saw {} remaining values outside {}..={stock}: the stock moved by \
             something other than the bench's buys",
            figures.unexpected_values,
            stock - changes as i64
        ));
    }
    check_orders(args, report, target, &buyers, &mut verdict).await?;
    verdict.passed = verdict.violations.is_empty();
    report.guarantees = Some(verdict);
    report.sse = Some(figures);
    Ok(())
}

/// The order checks of the other scenarios, for the buys of the fan-out.
async fn check_orders(
    args: &BenchArgs,
    report: &mut Report,
    target: &Target,
    buyers: &Buyers,
    verdict: &mut Verdict,
) -> Result<(), BenchError> {
    let accepted_ids = buyers.order_ids();
    let unique = accepted_ids.iter().collect::<HashSet<_>>().len() as i64;
    let stock = i64::try_from(report.stock).unwrap_or(i64::MAX);
    let mut facts = Facts {
        stock,
        demand: args.changes as i64,
        limit: i64::from(args.limit),
        settled: buyers.accepted() == args.changes as u64,
        accepted_ids,
        ..Facts::default()
    };
    if let Some(db) = &target.database_url {
        let s = settle::wait(db, target.sale, unique).await?;
        report.orders_persisted = Some(s.orders);
        if !s.drained {
            verdict
                .violations
                .push("the order queue did not drain within 60 s".to_owned());
        }
        facts = check::facts_from_db(db, target.sale, facts).await?;
        verdict.checked.extend([
            "sold units == changes; no user above the per-user limit; no duplicate keys".into(),
            "every order id answered 202 is in the orders table".into(),
            "remaining (GET /api/v1/sales/{id}) + sold == stock".into(),
        ]);
    } else {
        facts.live_units = unique;
        facts.stored_ids = facts.accepted_ids.iter().cloned().collect();
        verdict
            .checked
            .push("remaining (GET /api/v1/sales/{id}) + orders answered 202 == stock".into());
        verdict
            .skipped
            .push("database checks (orders persisted, limits, keys): give --database-url".into());
    }
    facts.remaining = prepare::remaining(&target.endpoint, target.sale).await?;
    verdict.violations.extend(check::judge(&facts));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_take_the_lower_middle() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(
            Spread::of(&ms(&[30, 10, 20])),
            Some(Spread {
                p50_ms: 20.0,
                max_ms: 30.0
            })
        );
        assert_eq!(Spread::of(&ms(&[40, 10, 30, 20])).unwrap().p50_ms, 20.0);
    }

    #[test]
    fn the_rows_carry_the_figures() {
        let f = SseFigures {
            subscribers: 10_000,
            subscribe_s: 2.5,
            server_rss_before_kib: Some(100 * 1024),
            server_rss_after_kib: Some(140 * 1024),
            server_rss_added_kib: Some(40 * 1024),
            server_rss_kib_per_subscriber: Some(4.096),
            changes: 10,
            changes_seen_by_all: 10,
            events_delivered: 100_000,
            saw_final: 10_000,
            last_seen: Some(Spread {
                p50_ms: 120.0,
                max_ms: 150.0,
            }),
            fanout_s: 2.0,
            server_cpu_s: Some(0.5),
            server_cpu_us_per_event: Some(5.0),
            ..SseFigures::default()
        };
        let mut out = String::new();
        f.rows(&mut out);
        for want in [
            "10000 idle subscribers",
            "100.0 MiB before, 140.0 MiB with the subscribers: +40.0 MiB, 4.10 KiB per idle",
            "10 of 10 changes seen by every subscriber",
            "until the last saw it p50 120.0 ms, max 150.0 ms",
            "0.50 s over 2.00 s (25% of one core), 5.00 µs per event per subscriber",
            "delivered       100000 events; missed 0",
            "saw the final remaining 10000 of 10000",
        ] {
            assert!(out.contains(want), "{want:?} in\n{out}");
        }
    }
}
