//! Telemetry shared by every flashsale service: structured logs, W3C trace context, request ids
//! and Prometheus metrics.
//!
//! * [`logging`] installs the `tracing` subscriber (human or JSON lines).
//! * [`trace_context`] parses and creates W3C `traceparent` headers, so one trace id follows a
//!   request from the HTTP gateway through every gRPC hop.
//! * [`span`] builds the per-request span (request id + trace id on every log line) for both the
//!   HTTP gateway and the gRPC servers, from the same headers.
//! * [`metrics`] installs the Prometheus recorder and names the metrics;
//!   [`grpc_metrics`] counts and times every gRPC request.
//! * [`traces`] records spans as OpenTelemetry spans (OTLP export, sampling by [`sampler`]) and
//!   [`span_buffer`] keeps recent ones in memory for `/debug/traces/{id}`.
//! * [`pii`] masks personal data and scrubs it from log lines.

pub mod grpc_metrics;
pub mod logging;
pub mod metrics;
pub mod pii;
pub mod sampler;
pub mod span;
pub mod span_buffer;
pub mod trace_context;
pub mod traces;

pub use trace_context::TraceContext;

/// Header carrying the request id, on HTTP and as gRPC metadata.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// W3C trace context header, on HTTP and as gRPC metadata.
pub const TRACEPARENT_HEADER: &str = "traceparent";
