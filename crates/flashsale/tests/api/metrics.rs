//! The metrics a live sale is watched with: after a small rush the exposition passes
//! `promtool check metrics`, carries the business metrics (outcomes per sale, stock, queue,
//! batches, latencies), and every metric the shipped Grafana dashboard queries exists; the
//! shipped Prometheus configuration passes `promtool check config`.
//!
//! It installs the process-wide Prometheus recorder, so it runs alone in its process
//! ([`alone_in_process`](crate::common::alone_in_process)).

use std::{collections::BTreeSet, path::Path};

use flashsale::startup::Telemetry;
use flashsale_testkit::{eventually, server};
use reqwest::StatusCode;

use crate::common::{alone_in_process, ip, promtool_check, scrape, Backend, TestApp};

fn deploy(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file)
}

/// The `flashsale_*` metric families a PromQL expression reads (histogram series named by
/// their family).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("flashsale_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        names.push(
            name.trim_end_matches("_bucket")
                .trim_end_matches("_count")
                .trim_end_matches("_sum")
                .to_owned(),
        );
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rush_is_visible_in_valid_metrics_and_the_dashboard_queries_them() {
    let alone = alone_in_process().await;
    let telemetry = Telemetry {
        metrics: flashsale_telemetry::metrics::install().unwrap(),
        traces: None,
    };
    let app = TestApp::spawn_full(alone, Backend::Memory, telemetry, |c| {
        c.inventory.reconcile_interval_ms = 20;
        // Two buys a minute per IP: the third attempt from one address is rate limited, however
        // slowly the test runs.
        c.gateway.limits.buy_per_ip = flashsale_limits::Rate::per_minute(2);
    })
    .await
    .unwrap();
    let sale = app.open_sale(3, 1).await;
    let mut statuses = Vec::new();
    for n in 0..6 {
        let token = app.customer(&format!("m{n}@example.com"), &ip(n)).await;
        statuses.push(app.buy(sale, &token, &ip(n), "k").await.status());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        3
    );
    // One address, three buyers on a sale with stock left: the limiter refuses some.
    let open = app.open_sale(100, 1).await;
    let mut tokens = Vec::new();
    for n in 0..3 {
        tokens.push(
            app.customer(&format!("same{n}@example.com"), "10.9.9.9")
                .await,
        );
    }
    let mut open_statuses = Vec::new();
    for token in &tokens {
        open_statuses.push(app.buy(open, token, "10.9.9.9", "k").await.status());
    }
    assert!(
        open_statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "no buy was rate limited: {open_statuses:?}"
    );
    let open_accepted = open_statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    assert_eq!(app.stored_orders(sale, 3).await.len(), 3);
    assert_eq!(
        app.stored_orders(open, open_accepted).await.len(),
        open_accepted
    );
    let persisted = 3 + open_accepted;

    // The reconciler publishes its gauge every 20 ms.
    let exposition = eventually(
        format!("the metrics to show {persisted} persisted orders and an empty queue"),
        std::time::Duration::from_secs(10),
        || async {
            let text = scrape(app.addr).await;
            // Every accepted buy holds its reservation until the reconciler confirms it, one
            // grace period (30 s) later. The consumer counts an order persisted before it
            // acknowledges it, so the queue depth reaches 0 a moment later.
            if text.contains(&format!("flashsale_reservations_unconfirmed {persisted}"))
                && text.contains(&format!("flashsale_orders_persisted_total {persisted}"))
                && text.contains("flashsale_order_queue_depth 0")
            {
                Ok(text)
            } else {
                Err(text)
            }
        },
    )
    .await;
    promtool_check("flashsale dev", &exposition).await;

    let sale_label = format!("sale=\"{sale}\"");
    for line in [
        format!("flashsale_buy_outcomes_total{{outcome=\"accepted\",{sale_label}}} 3"),
        format!("flashsale_stock_remaining{{{sale_label}}} 0"),
    ] {
        assert!(
            exposition.contains(&line),
            "missing {line:?} in\n{exposition}"
        );
    }
    assert!(exposition.contains("flashsale_buy_outcomes_total{outcome=\"rate_limited\""));
    assert!(exposition.contains("flashsale_rate_limited_total{route=\"buy\"}"));
    assert!(exposition.contains("flashsale_order_persist_batch_size_bucket"));
    assert!(exposition.contains("flashsale_db_query_duration_seconds_bucket{op=\"insert_orders\""));
    assert!(exposition.contains("flashsale_stock_call_duration_seconds_bucket{op=\"reserve"));
    // In one process the buy path calls the services directly: no call was batched (the
    // order rows were, by the group commit above).
    assert!(!exposition.contains("flashsale_gateway_call_batch_size_count"));
    // Bounded label sets: only these label names, never an id of a user or an order, and
    // routes as templates.
    let allowed = [
        "route", "status", "outcome", "sale", "method", "code", "op", "call", "le", "quantile",
    ];
    for line in exposition
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('{'))
    {
        let labels = &line[line.find('{').unwrap() + 1..line.rfind('}').unwrap()];
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once("=\"").unwrap();
            let value = value.trim_end_matches('"');
            assert!(allowed.contains(&name), "label {name} in {line}");
            assert!(
                uuid::Uuid::parse_str(value).is_err(),
                "an id as a label: {line}"
            );
            if name == "route" {
                assert!(
                    !value.split('/').any(|seg| seg.parse::<i64>().is_ok()),
                    "{line}"
                );
            }
        }
    }

    // The dashboard reads only metrics that exist.
    let exposed: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/flashsale-live-sale.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel without queries: {panel}");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                // Gateways of separate processes batch their gRPC calls; in one process the buy
                // path calls the services directly, so `dev` never records this one.
                if name == flashsale_telemetry::metrics::GATEWAY_CALL_BATCH_SIZE {
                    continue;
                }
                assert!(
                    exposed.contains(&name),
                    "dashboard panel {:?} queries {name}, which no service exposes",
                    panel["title"]
                );
            }
        }
    }

    // The shipped scrape configuration is valid.
    let config = deploy("prometheus.yml");
    let checked = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output();
    if let Some(out) = server::required(
        "promtool (to check deploy/prometheus.yml)",
        checked,
        "apt-get install prometheus; .ci/run installs it",
    ) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    app.finish().await;
}

#[test]
fn metric_names_are_read_out_of_queries() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.5, sum by (le) (rate(flashsale_http_request_duration_seconds_bucket[1m]))) / flashsale_x_total"
        ),
        vec!["flashsale_http_request_duration_seconds", "flashsale_x_total"]
    );
}
