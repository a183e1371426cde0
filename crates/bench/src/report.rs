//! The report: a human table on stdout and the same figures as JSON (`--json FILE`).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    args::Scenario,
    check::Verdict,
    cpu::{per_request_us, percent_of_core, ratio},
    load::Outcomes,
    procfs::CpuTimes,
    sse::SseFigures,
};

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    /// Percentiles of a histogram of µs.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// One load phase's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    /// Seconds the load ran.
    pub elapsed_s: f64,
    /// All attempts (answered or failed).
    pub attempts: u64,
    /// Attempts per second.
    pub attempts_per_s: f64,
    /// 2xx answers (202 accepted for buys).
    pub accepted: u64,
    /// Accepted per second.
    pub accepted_per_s: f64,
    /// Latency.
    pub latency: Latency,
    /// Answers by class.
    pub outcomes: Outcomes,
    /// Bench client CPU over the phase, in % of one core.
    pub client_cpu_pct: Option<f64>,
    /// Bench client CPU per attempt, µs.
    pub client_cpu_us_per_request: Option<f64>,
    /// The part of it in the client's own code (user time), µs; the rest is the kernel's,
    /// mostly loopback TCP.
    pub client_cpu_user_us_per_request: Option<f64>,
    /// CPU the measured server processes spent together (every thread), seconds, over
    /// `server_cpu_span_s`.
    pub server_cpu_s: Option<f64>,
    /// Wall seconds the server CPU was counted over: the load, and for buys on a database the
    /// bench watches, until their orders were persisted.
    pub server_cpu_span_s: Option<f64>,
    /// Server CPU per attempt, µs.
    pub server_cpu_us_per_request: Option<f64>,
    /// The part of it in the server's own code (user time), µs.
    pub server_cpu_user_us_per_request: Option<f64>,
}

impl Phase {
    /// Records what the servers spent, `cpu` over `span_s` seconds, per attempt.
    pub fn set_server_cpu(&mut self, cpu: Option<CpuTimes>, span_s: f64) {
        self.server_cpu_s = cpu.map(|t| t.total_s());
        self.server_cpu_span_s = cpu.map(|_| span_s);
        self.server_cpu_us_per_request =
            cpu.and_then(|t| per_request_us(t.total_s(), self.attempts));
        self.server_cpu_user_us_per_request =
            cpu.and_then(|t| per_request_us(t.user_s, self.attempts));
    }

    /// Records what the client spent, `cpu` over `span_s` seconds, per attempt.
    pub fn set_client_cpu(&mut self, cpu: Option<CpuTimes>, span_s: f64) {
        self.client_cpu_pct = cpu.and_then(|t| percent_of_core(t.total_s(), span_s));
        self.client_cpu_us_per_request =
            cpu.and_then(|t| per_request_us(t.total_s(), self.attempts));
        self.client_cpu_user_us_per_request =
            cpu.and_then(|t| per_request_us(t.user_s, self.attempts));
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Scenario.
    pub scenario: Option<Scenario>,
    /// `closed` or `open`.
    pub model: String,
    /// Open-loop rate.
    pub rate: Option<f64>,
    /// Users.
    pub users: usize,
    /// Stock.
    pub stock: u64,
    /// Per-user limit.
    pub limit: u32,
    /// Connections.
    pub connections: usize,
    /// Longest duration asked for, seconds.
    pub duration_s: f64,
    /// Logical CPUs of the machine.
    pub cpus: usize,
    /// `--server-cpus`: the CPUs the spawned and the ceiling server were pinned to.
    pub server_cpus: Option<String>,
    /// The CPUs the bench's client ran on, with `--server-cpus`.
    pub client_cpus: Option<String>,
    /// Whether the server was spawned by the bench (with cheap password hashing).
    pub spawned: bool,
    /// Seconds preparing users and the sale (not timed in the figures).
    pub prepare_s: f64,
    /// The load phase (absent for `ceiling`).
    pub load: Option<Phase>,
    /// Whether every user got a final answer before the duration ended.
    pub settled: bool,
    /// Orders of the sale in the database once settled.
    pub orders_persisted: Option<i64>,
    /// Orders persisted per second, from the start of the load until the queue drained.
    pub orders_persisted_per_s: Option<f64>,
    /// Seconds from the start of the load until the queue drained.
    pub persisted_after_s: Option<f64>,
    /// The ceiling, if measured.
    pub ceiling: Option<Phase>,
    /// Load attempts/s as a fraction of the ceiling's.
    pub ratio_to_ceiling: Option<f64>,
    /// Server CPU per attempt as a multiple of the bare server's per request: the figure that
    /// says what the scenario costs next to a bare answer, whatever the machine's speed.
    pub server_cpu_ratio_to_ceiling: Option<f64>,
    /// Peak RSS of the spawned server (with `--url`, of the `--server-pid` processes, each
    /// one's peak summed), KiB.
    pub server_peak_rss_kib: Option<u64>,
    /// CPU the spawned server (every service and its database threads) spent per accepted buy,
    /// µs: from the start of the load until the orders were persisted. Steadier than a rate on
    /// a shared machine, since it does not depend on what else got the cores.
    pub server_cpu_us_per_accepted: Option<f64>,
    /// CPU the Redis given with `--redis-url` spent per accepted buy over the same span, µs.
    pub redis_cpu_us_per_accepted: Option<f64>,
    /// `sse`: the live stream's subscribers and fan-out.
    pub sse: Option<SseFigures>,
    /// The guarantee check.
    pub guarantees: Option<Verdict>,
    /// The same load on a second spawned server with customer authentication switched off
    /// (`--compare-auth-off`).
    pub auth_off: Option<Phase>,
    /// Load attempts/s with authentication as a fraction of the same load without it.
    pub ratio_to_auth_off: Option<f64>,
}

/// A phase shorter than this gets a note that its CPU figures are coarse: `/proc` counts CPU
/// time in 10 ms ticks, so each reading is off by up to 10 ms.
const SHORT_PHASE_S: f64 = 2.0;

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn phase_rows(out: &mut String, name: &str, p: &Phase) {
    let l = &p.latency;
    let o = &p.outcomes;
    let _ = writeln!(out, "{name}");
    let _ = writeln!(
        out,
        "  attempts        {:>10}   {:>10.0}/s   over {:.2} s",
        p.attempts, p.attempts_per_s, p.elapsed_s
    );
    let _ = writeln!(
        out,
        "  accepted (2xx)  {:>10}   {:>10.0}/s",
        p.accepted, p.accepted_per_s
    );
    let _ = writeln!(
        out,
        "  latency ms      p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
    );
    let _ = writeln!(
        out,
        "  outcomes        2xx {}  409 {}  429 {}  other 4xx {}  5xx {}  errors/timeouts {}",
        o.ok_2xx, o.conflict_409, o.rate_limited_429, o.other_4xx, o.server_5xx, o.errors
    );
    let _ = writeln!(
        out,
        "  client CPU      {}% of one core, {} µs per attempt ({} in its own code)",
        opt(p.client_cpu_pct, 0),
        opt(p.client_cpu_us_per_request, 1),
        opt(p.client_cpu_user_us_per_request, 1)
    );
    match (p.server_cpu_s, p.server_cpu_span_s) {
        (Some(cpu), Some(span)) => {
            let _ = writeln!(
                out,
                "  server CPU      {cpu:.2} s over {span:.2} s ({}% of one core), {} µs per \
                 attempt ({} in its own code)",
                opt(percent_of_core(cpu, span), 0),
                opt(p.server_cpu_us_per_request, 1),
                opt(p.server_cpu_user_us_per_request, 1)
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "  server CPU      - (not measured: --spawn, or --server-pid with --url)"
            );
        }
    }
    if p.attempts > 0 && p.elapsed_s < SHORT_PHASE_S {
        let _ = writeln!(
            out,
            "  note            {:.2} s is short for CPU times counted in 10 ms ticks: give more \
             --users (or --duration) for steadier CPU figures",
            p.elapsed_s
        );
    }
}

impl Report {
    /// The human table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let scenario = self
            .scenario
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if self.scenario == Some(Scenario::Sse) {
            let _ = writeln!(
                out,
                "flashsale bench {scenario}: {} subscribers, {} cpus",
                self.connections, self.cpus
            );
        } else {
            let _ = writeln!(
                out,
                "flashsale bench {scenario}: {} loop{}, {} connections, {} cpus",
                self.model,
                self.rate
                    .map(|r| format!(" at {r:.0} req/s"))
                    .unwrap_or_default(),
                self.connections,
                self.cpus
            );
        }
        if let Some(list) = &self.server_cpus {
            let _ = writeln!(
                out,
                "pinned: servers on CPUs {list}, the bench's client on CPUs {}",
                self.client_cpus.as_deref().unwrap_or("-")
            );
        }
        if let Some(c) = &self.ceiling {
            phase_rows(&mut out, "ceiling (bare axum, GET /) in its own process", c);
        }
        let buys = self.scenario.is_some_and(Scenario::buys);
        if let Some(p) = &self.load {
            let _ = writeln!(
                out,
                "sale: {} users, stock {}, limit {} (prepared in {:.1} s)",
                self.users, self.stock, self.limit, self.prepare_s
            );
            let path = if buys {
                "POST /api/v1/sales/{id}/orders"
            } else {
                "GET /api/v1/sales/{id}"
            };
            phase_rows(&mut out, &format!("{scenario} ({path})"), p);
            if buys {
                let _ = writeln!(out, "  settled         {}", self.settled);
                let _ = writeln!(
                    out,
                    "  persisted       {} orders, {}/s until drained after {} s",
                    self.orders_persisted
                        .map_or("-".to_owned(), |o| o.to_string()),
                    opt(self.orders_persisted_per_s, 0),
                    opt(self.persisted_after_s, 2)
                );
            }
            let _ = writeln!(out, "  vs bare server  {}", self.versus_ceiling());
            let _ = writeln!(
                out,
                "  server peak RSS {}",
                self.server_peak_rss_kib
                    .map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
            );
            if buys {
                let _ = writeln!(
                    out,
                    "  server CPU      {} µs per accepted buy (load and persisting)",
                    opt(self.server_cpu_us_per_accepted, 1)
                );
            }
            if self.redis_cpu_us_per_accepted.is_some() {
                let _ = writeln!(
                    out,
                    "  Redis CPU       {} µs per accepted buy (--redis-url)",
                    opt(self.redis_cpu_us_per_accepted, 1)
                );
            }
        }
        if let Some(sse) = &self.sse {
            let _ = writeln!(
                out,
                "sale: stock {}, limit {}, {} buyers (prepared in {:.1} s)",
                self.stock, self.limit, self.users, self.prepare_s
            );
            sse.rows(&mut out);
            let _ = writeln!(
                out,
                "  vs bare server  {}",
                match &self.ceiling {
                    Some(c) => format!(
                        "server CPU per event {} × its per request ({} µs vs {} µs)",
                        opt(sse.server_cpu_ratio_to_ceiling, 2),
                        opt(sse.server_cpu_us_per_event, 2),
                        opt(c.server_cpu_us_per_request, 1)
                    ),
                    None => "- (give --with-ceiling)".to_owned(),
                }
            );
            let _ = writeln!(
                out,
                "  server peak RSS {}",
                self.server_peak_rss_kib
                    .map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
            );
        }
        if let Some(p) = &self.auth_off {
            phase_rows(
                &mut out,
                &format!("{scenario}, authentication switched off"),
                p,
            );
            let _ = writeln!(
                out,
                "  auth cost       with auth {} × the attempts/s without",
                opt(self.ratio_to_auth_off, 2)
            );
        }
        if let Some(g) = &self.guarantees {
            let verdict = if g.passed { "PASSED" } else { "FAILED" };
            let _ = writeln!(out, "guarantees      {verdict}");
            for c in &g.checked {
                let _ = writeln!(out, "  checked: {c}");
            }
            for s in &g.skipped {
                let _ = writeln!(out, "  skipped: {s}");
            }
            for v in &g.violations {
                let _ = writeln!(out, "  VIOLATION: {v}");
            }
        }
        if let Some(sse) = &self.sse {
            let _ = writeln!(
                out,
                "summary         sse: {} KiB of server memory per idle subscriber; a change \
                 reaches the last of {} subscribers {} ms after its 202 (p50; max {}); {} µs of \
                 server CPU per event, {} × the bare server's per request",
                opt(sse.server_rss_kib_per_subscriber, 2),
                sse.subscribers,
                opt(sse.last_seen.map(|s| s.p50_ms), 1),
                opt(sse.last_seen.map(|s| s.max_ms), 1),
                opt(sse.server_cpu_us_per_event, 2),
                opt(sse.server_cpu_ratio_to_ceiling, 2)
            );
        }
        if self.load.is_some() && self.ceiling.is_some() {
            let _ = writeln!(
                out,
                "summary         {scenario}: {} × the bare server's throughput, {} × its server \
                 CPU per request",
                opt(self.ratio_to_ceiling, 2),
                opt(self.server_cpu_ratio_to_ceiling, 2)
            );
        }
        out
    }

    /// Sets the ratios of the load to the ceiling, where both were measured.
    pub fn compare_to_ceiling(&mut self) {
        if let (Some(sse), Some(ceiling)) = (&mut self.sse, &self.ceiling) {
            sse.server_cpu_ratio_to_ceiling = ratio(
                sse.server_cpu_us_per_event,
                ceiling.server_cpu_us_per_request,
            );
        }
        let (Some(load), Some(ceiling)) = (&self.load, &self.ceiling) else {
            return;
        };
        self.ratio_to_ceiling = ratio(Some(load.attempts_per_s), Some(ceiling.attempts_per_s));
        self.server_cpu_ratio_to_ceiling = ratio(
            load.server_cpu_us_per_request,
            ceiling.server_cpu_us_per_request,
        );
    }

    /// The "vs bare server" line.
    fn versus_ceiling(&self) -> String {
        let Some(ceiling) = &self.ceiling else {
            return "- (give --with-ceiling)".to_owned();
        };
        let load = self.load.as_ref();
        format!(
            "{} × its attempts/s; server CPU per attempt {} × its ({} µs vs {} µs)",
            opt(self.ratio_to_ceiling, 2),
            opt(self.server_cpu_ratio_to_ceiling, 2),
            opt(load.and_then(|l| l.server_cpu_us_per_request), 1),
            opt(ceiling.server_cpu_us_per_request, 1),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_ms() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for us in 1..=1000 {
            h.record(us * 10).unwrap();
        }
        let l = Latency::from_histogram(&h);
        assert!((l.p50_ms - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.p99_ms - 9.9).abs() < 0.01, "{l:?}");
        assert!((l.max_ms - 10.0).abs() < 0.01, "{l:?}");
        assert_eq!(
            Latency::from_histogram(&Histogram::new(3).unwrap()),
            Latency::default()
        );
    }

    #[test]
    fn table_and_json_render() {
        let r = Report {
            scenario: Some(Scenario::Rush),
            model: "closed".into(),
            load: Some(Phase::default()),
            guarantees: Some(Verdict {
                passed: false,
                violations: vec!["x".into()],
                ..Verdict::default()
            }),
            ..Report::default()
        };
        assert!(r.table().contains("VIOLATION: x"));
        assert!(r
            .table()
            .contains("vs bare server  - (give --with-ceiling)"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["scenario"], "rush");
    }

    fn phase(attempts: u64, secs: f64, server_cpu_s: f64) -> Phase {
        let mut p = Phase {
            elapsed_s: secs,
            attempts,
            attempts_per_s: attempts as f64 / secs,
            ..Phase::default()
        };
        // A quarter in user space, the rest in the kernel.
        let cpu = CpuTimes {
            user_s: server_cpu_s / 4.0,
            system_s: server_cpu_s * 3.0 / 4.0,
        };
        p.set_server_cpu(Some(cpu), secs);
        p
    }

    #[test]
    fn the_load_is_compared_with_the_bare_server() {
        // The bare server: 700,000 requests in 10 s on 6.02 s of CPU, 8.6 µs each; the sale
        // page: 100,000 in 10 s on 3.52 s, 35.2 µs each.
        let mut r = Report {
            scenario: Some(Scenario::Read),
            ceiling: Some(phase(700_000, 10.0, 6.02)),
            load: Some(phase(100_000, 10.0, 3.52)),
            ..Report::default()
        };
        r.compare_to_ceiling();
        let speed = r.ratio_to_ceiling.unwrap();
        assert!((speed - 1.0 / 7.0).abs() < 1e-9, "{speed}");
        let cost = r.server_cpu_ratio_to_ceiling.unwrap();
        assert!((cost - 35.2 / 8.6).abs() < 1e-9, "{cost}");
        let table = r.table();
        assert!(table.contains("GET /api/v1/sales/{id}"), "{table}");
        assert!(!table.contains("persisted"), "{table}");
        assert!(
            table.contains(
                "0.14 × its attempts/s; server CPU per attempt 4.09 × its (35.2 µs vs 8.6 µs)"
            ),
            "{table}"
        );
        assert!(
            table.contains("read: 0.14 × the bare server's throughput, 4.09 × its server CPU"),
            "{table}"
        );
        assert!(
            table.contains(
                "server CPU      3.52 s over 10.00 s (35% of one core), 35.2 µs per attempt"
            ),
            "{table}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert!((json["server_cpu_ratio_to_ceiling"].as_f64().unwrap() - cost).abs() < 1e-12);
        let per_request = json["load"]["server_cpu_us_per_request"].as_f64().unwrap();
        assert!((per_request - 35.2).abs() < 1e-9, "{per_request}");
    }

    #[test]
    fn the_client_figures_split_its_own_code_from_the_kernel() {
        let mut p = phase(50_000, 2.0, 1.0);
        let cpu = CpuTimes {
            user_s: 0.1,
            system_s: 0.4,
        };
        p.set_client_cpu(Some(cpu), 2.0);
        assert_eq!(p.client_cpu_pct, Some(25.0));
        assert!((p.client_cpu_us_per_request.unwrap() - 10.0).abs() < 1e-9);
        assert!((p.client_cpu_user_us_per_request.unwrap() - 2.0).abs() < 1e-9);
        let mut out = String::new();
        phase_rows(&mut out, "x", &p);
        assert!(!out.contains("note"), "{out}");
        p.elapsed_s = 0.5;
        phase_rows(&mut out, "x", &p);
        assert!(out.contains("note            0.50 s is short"), "{out}");
        assert!(
            out.contains(
                "client CPU      25% of one core, 10.0 µs per attempt (2.0 in its own code)"
            ),
            "{out}"
        );
    }

    #[test]
    fn the_fan_out_is_compared_with_the_bare_server() {
        let mut r = Report {
            scenario: Some(Scenario::Sse),
            connections: 10_000,
            ceiling: Some(phase(700_000, 10.0, 6.02)),
            sse: Some(SseFigures {
                subscribers: 10_000,
                server_rss_kib_per_subscriber: Some(4.5),
                server_cpu_us_per_event: Some(4.3),
                ..SseFigures::default()
            }),
            ..Report::default()
        };
        r.compare_to_ceiling();
        let cost = r.sse.as_ref().unwrap().server_cpu_ratio_to_ceiling.unwrap();
        assert!((cost - 0.5).abs() < 1e-9, "{cost}");
        assert_eq!(r.ratio_to_ceiling, None);
        let table = r.table();
        assert!(
            table.starts_with("flashsale bench sse: 10000 subscribers"),
            "{table}"
        );
        assert!(
            table.contains("server CPU per event 0.50 × its per request (4.30 µs vs 8.6 µs)"),
            "{table}"
        );
        assert!(
            table.contains("sse: 4.50 KiB of server memory per idle subscriber"),
            "{table}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["sse"]["subscribers"], 10_000);
    }

    #[test]
    fn no_server_figure_no_ratio() {
        let mut without = phase(100, 1.0, 0.0);
        without.set_server_cpu(None, 1.0);
        assert_eq!(without.server_cpu_span_s, None);
        assert_eq!(without.server_cpu_user_us_per_request, None);
        let mut r = Report {
            ceiling: Some(phase(1000, 1.0, 0.01)),
            load: Some(without),
            ..Report::default()
        };
        r.compare_to_ceiling();
        assert_eq!(r.ratio_to_ceiling, Some(0.1));
        assert_eq!(r.server_cpu_ratio_to_ceiling, None);
        assert!(r.table().contains("server CPU      - (not measured"));
    }
}
