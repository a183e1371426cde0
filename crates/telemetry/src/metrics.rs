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
        .map_err(|e| MetricsError(e.to_string()))
}

/// Installs the process-wide recorder and returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    builder()?
        .install_recorder()
        .map_err(|e| MetricsError(e.to_string()))
}

/// A handle to a recorder that is not installed (renders nothing): for in-process test apps,
/// where several apps share one process and only one recorder can be global.
pub fn detached() -> PrometheusHandle {
    PrometheusBuilder::new().build_recorder().handle()
}
