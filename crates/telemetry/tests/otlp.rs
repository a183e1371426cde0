//! OTLP export against a collector stand-in: a real OTLP/gRPC `TraceService` on a loopback port
//! receives the spans a `tracing` span tree produces, with the service name, the span names and
//! the parent/child links intact, and only what the sampler keeps.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};

use flashsale_telemetry::traces::{TracesConfig, Tracing};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        trace_service_server::{TraceService, TraceServiceServer},
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    trace::v1::ResourceSpans,
};
use tracing_subscriber::prelude::*;

#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ResourceSpans>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received
            .lock()
            .unwrap()
            .extend(request.into_inner().resource_spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn collector() -> (Collector, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (collector, format!("http://{addr}"))
}

/// Records `spans` request trees (a request span with one child each) through `tracing`.
async fn record(config: TracesConfig, trees: usize) -> Collector {
    let (collector, endpoint) = collector().await;
    let config = TracesConfig {
        otlp_endpoint: Some(endpoint),
        buffer_spans: Some(0),
        ..config
    };
    let tracing = Tracing::start(&config, "flashsale-otlp-test", 0)
        .unwrap()
        .unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(tracing.tracer()));
    tracing::subscriber::with_default(subscriber, || {
        for n in 0..trees {
            let request = tracing::info_span!("request", otel.name = "POST /buy", n);
            let _entered = request.enter();
            let child = tracing::info_span!("reserve", otel.kind = "client");
            drop(child.enter());
        }
    });
    // Flushes the batch to the collector (blocking: off the runtime's threads).
    tokio::task::spawn_blocking(move || tracing.shutdown())
        .await
        .unwrap();
    collector
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_with_their_tree() {
    let collector = record(TracesConfig::default(), 3).await;
    let received = collector.received.lock().unwrap().clone();
    let service_names: Vec<String> = received
        .iter()
        .flat_map(|r| r.resource.iter())
        .flat_map(|r| r.attributes.iter())
        .filter(|kv| kv.key == "service.name")
        .map(|kv| format!("{:?}", kv.value))
        .collect();
    assert!(!service_names.is_empty());
    assert!(service_names
        .iter()
        .all(|s| s.contains("flashsale-otlp-test")));
    let spans: Vec<_> = received
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .flat_map(|s| s.spans.iter())
        .collect();
    assert_eq!(spans.len(), 6, "3 requests with one child each");
    let roots: Vec<_> = spans.iter().filter(|s| s.name == "POST /buy").collect();
    assert_eq!(roots.len(), 3);
    for root in &roots {
        assert!(root.parent_span_id.is_empty());
        let children: Vec<_> = spans
            .iter()
            .filter(|s| s.parent_span_id == root.span_id)
            .collect();
        assert_eq!(children.len(), 1);
        assert_eq!(children[0].name, "reserve");
        assert_eq!(children[0].trace_id, root.trace_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_sample_ratio_exports_nothing() {
    let config = TracesConfig {
        sample_ratio: 0.0,
        ..TracesConfig::default()
    };
    let collector = record(config, 5).await;
    let spans: usize = collector
        .received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .map(|s| s.spans.len())
        .sum();
    assert_eq!(spans, 0);
}

/// A rush of new traces: only `max_new_per_second` of them (plus what the bucket refilled
/// while the test ran) reach the collector, each whole (root and child together).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_traces_beyond_the_per_second_cap_are_not_recorded() {
    let config = TracesConfig {
        max_new_per_second: 3,
        ..TracesConfig::default()
    };
    let started = std::time::Instant::now();
    let collector = record(config, 40).await;
    let refilled = (started.elapsed().as_secs_f64() * 3.0).ceil() as usize;
    let spans: Vec<_> = collector
        .received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .flat_map(|s| s.spans.clone())
        .collect();
    let roots: Vec<_> = spans.iter().filter(|s| s.name == "POST /buy").collect();
    assert!(
        (3..=3 + refilled).contains(&roots.len()),
        "{} of 40 traces recorded",
        roots.len()
    );
    assert_eq!(
        spans.len(),
        2 * roots.len(),
        "a recorded root keeps its child"
    );
}

#[test]
fn a_sample_ratio_outside_zero_to_one_is_refused() {
    let config = TracesConfig {
        sample_ratio: 1.5,
        buffer_spans: Some(10),
        ..TracesConfig::default()
    };
    assert!(Tracing::start(&config, "x", 0).is_err());
    let off = TracesConfig {
        buffer_spans: Some(0),
        ..TracesConfig::default()
    };
    assert!(Tracing::start(&off, "x", 0).unwrap().is_none());
}
