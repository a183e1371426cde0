//! The report: a human table on stdout and the same figures as JSON (`--json FILE`).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{args::Scenario, check::Verdict, load::Outcomes};

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
    /// Peak RSS of the spawned server, KiB.
    pub server_peak_rss_kib: Option<u64>,
    /// CPU the spawned server (every service and its database threads) spent per accepted buy,
    /// µs: from the start of the load until the orders were persisted. Steadier than a rate on
    /// a shared machine, since it does not depend on what else got the cores.
    pub server_cpu_us_per_accepted: Option<f64>,
    /// CPU the Redis given with `--redis-url` spent per accepted buy over the same span, µs.
    pub redis_cpu_us_per_accepted: Option<f64>,
    /// The guarantee check.
    pub guarantees: Option<Verdict>,
    /// The same load on a second spawned server with customer authentication switched off
    /// (`--compare-auth-off`).
    pub auth_off: Option<Phase>,
    /// Load attempts/s with authentication as a fraction of the same load without it.
    pub ratio_to_auth_off: Option<f64>,
}

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
    let per_attempt = p
        .client_cpu_pct
        .filter(|_| p.attempts_per_s > 0.0)
        .map(|pct| pct / 100.0 * 1e6 / p.attempts_per_s);
    let _ = writeln!(
        out,
        "  client CPU      {}% of one core, {} µs per attempt",
        opt(p.client_cpu_pct, 0),
        opt(per_attempt, 1)
    );
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
        if let Some(c) = &self.ceiling {
            phase_rows(&mut out, "ceiling (bare axum, GET /)", c);
        }
        if let Some(p) = &self.load {
            let _ = writeln!(
                out,
                "sale: {} users, stock {}, limit {} (prepared in {:.1} s)",
                self.users, self.stock, self.limit, self.prepare_s
            );
            phase_rows(
                &mut out,
                &format!("{scenario} (POST /api/v1/sales/{{id}}/orders)"),
                p,
            );
            let _ = writeln!(out, "  settled         {}", self.settled);
            let _ = writeln!(
                out,
                "  persisted       {} orders, {}/s until drained after {} s",
                self.orders_persisted
                    .map_or("-".to_owned(), |o| o.to_string()),
                opt(self.orders_persisted_per_s, 0),
                opt(self.persisted_after_s, 2)
            );
            let _ = writeln!(
                out,
                "  vs ceiling      {}",
                self.ratio_to_ceiling
                    .map_or("-".to_owned(), |r| format!("{r:.2} × ceiling attempts/s"))
            );
            let _ = writeln!(
                out,
                "  server peak RSS {}",
                self.server_peak_rss_kib
                    .map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
            );
            let _ = writeln!(
                out,
                "  server CPU      {} µs per accepted buy (load and persisting)",
                opt(self.server_cpu_us_per_accepted, 1)
            );
            if self.redis_cpu_us_per_accepted.is_some() {
                let _ = writeln!(
                    out,
                    "  Redis CPU       {} µs per accepted buy (--redis-url)",
                    opt(self.redis_cpu_us_per_accepted, 1)
                );
            }
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
        out
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
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["scenario"], "rush");
    }
}
