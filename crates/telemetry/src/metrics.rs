//! Prometheus metrics.
//!
//! Services record through the `metrics` facade (counters, histograms, gauges named below); the
//! binary installs one Prometheus recorder per process and serves its rendering at `/metrics`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// HTTP requests answered by the gateway, labelled by route and status.
pub const HTTP_REQUESTS: &str = "flashsale_http_requests_total";
/// HTTP request latency in seconds, labelled by route.
pub const HTTP_LATENCY: &str = "flashsale_http_request_duration_seconds";
/// Buy decisions, labelled by outcome.
pub const BUY_OUTCOMES: &str = "flashsale_buy_outcomes_total";
/// Attempts refused by the anti-brush limits, labelled by route (buy, login, register).
pub const RATE_LIMITED: &str = "flashsale_rate_limited_total";
/// Orders persisted by the order consumer.
pub const ORDERS_PERSISTED: &str = "flashsale_orders_persisted_total";
/// Order requests accepted into the queue but not yet persisted.
pub const QUEUE_DEPTH: &str = "flashsale_order_queue_depth";
/// Order requests the NATS queue's consumer has not acknowledged yet: not yet delivered plus
/// delivered and unacknowledged (`num_pending + num_ack_pending`).
pub const QUEUE_LAG: &str = "flashsale_order_queue_consumer_lag";
/// Size of the batches written by the order consumer.
pub const PERSIST_BATCH: &str = "flashsale_order_persist_batch_size";
/// Orders expired for want of payment.
pub const ORDERS_EXPIRED: &str = "flashsale_orders_expired_total";
/// gRPC requests served, labelled by method (`flashsale.inventory.v1.Inventory/Reserve`) and
/// gRPC status code name.
pub const GRPC_REQUESTS: &str = "flashsale_grpc_requests_total";
/// gRPC request latency in seconds (until the response headers), labelled by method.
pub const GRPC_LATENCY: &str = "flashsale_grpc_request_duration_seconds";
/// Stock left per sale after the latest decision of this inventory instance.
pub const STOCK_REMAINING: &str = "flashsale_stock_remaining";
/// Reservations whose order is not yet confirmed in the database (at the last reconcile pass).
pub const RESERVATIONS_UNCONFIRMED: &str = "flashsale_reservations_unconfirmed";
/// Latency of calls to the stock backend (Redis or in-process), labelled by operation.
pub const STOCK_CALL_LATENCY: &str = "flashsale_stock_call_duration_seconds";
/// Latency of database writes on the order path, labelled by operation.
pub const DB_LATENCY: &str = "flashsale_db_query_duration_seconds";
/// Live instances per service in this registry replica.
pub const REGISTRY_INSTANCES: &str = "flashsale_registry_instances";
/// Items per gRPC call the gateway sent for buys, labelled by call (`reserve`, `submit`): 1
/// for a call sent alone, more when concurrent buys shared one call.
pub const GATEWAY_CALL_BATCH_SIZE: &str = "flashsale_gateway_call_batch_size";

/// Every metric with its kind and help text (the `# HELP` lines; `promtool check metrics`
/// insists on them). New metrics are added here.
const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (HTTP_REQUESTS, Kind::Counter, "HTTP requests answered by the gateway, by route template and status."),
    (HTTP_LATENCY, Kind::Histogram, "HTTP request latency by route template, in seconds."),
    (BUY_OUTCOMES, Kind::Counter, "Buy attempts by outcome (accepted, sold_out, sold_out_local, limit_reached, rate_limited, not_started, ended) and sale."),
    (RATE_LIMITED, Kind::Counter, "Requests refused by the anti-brush limits, by route."),
    (ORDERS_PERSISTED, Kind::Counter, "Orders written to the order table (by the direct intake or the queue consumer)."),
    (QUEUE_DEPTH, Kind::Gauge, "Order requests queued and not yet written (consumer lag; always 0 with the direct intake)."),
    (PERSIST_BATCH, Kind::Histogram, "Order requests per batch written to the order table."),
    (ORDERS_EXPIRED, Kind::Counter, "Orders expired unpaid (their stock released)."),
    (GRPC_REQUESTS, Kind::Counter, "gRPC requests served, by method and status code."),
    (GRPC_LATENCY, Kind::Histogram, "gRPC request latency by method, in seconds."),
    (STOCK_REMAINING, Kind::Gauge, "Stock left per sale after this instance's latest decision."),
    (RESERVATIONS_UNCONFIRMED, Kind::Gauge, "Reservations whose order is not confirmed yet (last reconcile pass)."),
    (STOCK_CALL_LATENCY, Kind::Histogram, "Stock backend call latency by operation, in seconds."),
    (DB_LATENCY, Kind::Histogram, "Database write latency on the order path by operation, in seconds."),
    (QUEUE_LAG, Kind::Gauge, "NATS order queue: requests not yet delivered plus delivered and not yet acknowledged."),
    (REGISTRY_INSTANCES, Kind::Gauge, "Live instances per service registered with this registry replica."),
    (GATEWAY_CALL_BATCH_SIZE, Kind::Histogram, "Buys per gRPC call the gateway sent (reserve, submit): 1 alone, more when batched."),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Registers the help text of every metric with the installed recorder.
fn describe() {
    for &(name, kind, help) in DESCRIPTIONS {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// Errors installing the recorder.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the Prometheus recorder: {0}")]
pub struct MetricsError(String);

fn builder() -> Result<PrometheusBuilder, MetricsError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ],
        )
        .map_err(|e| MetricsError(e.to_string()))?
        .set_buckets_for_metric(
            Matcher::Full(GATEWAY_CALL_BATCH_SIZE.into()),
            &[
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ],
        )
        .map_err(|e| MetricsError(e.to_string()))?
        .set_buckets_for_metric(
            Matcher::Full(PERSIST_BATCH.into()),
            &[
                1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0,
            ],
        )
        .map_err(|e| MetricsError(e.to_string()))
}

/// Installs the process-wide recorder and returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let handle = builder()?
        .install_recorder()
        .map_err(|e| MetricsError(e.to_string()))?;
    describe();
    Ok(handle)
}

/// A handle to a recorder that is not installed (renders nothing): for in-process test apps,
/// where several apps share one process and only one recorder can be global.
pub fn detached() -> PrometheusHandle {
    PrometheusBuilder::new().build_recorder().handle()
}
