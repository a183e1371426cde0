//! The per-request span, built the same way by the HTTP gateway and the gRPC servers, and the
//! trace context that follows from it.
//!
//! Every request gets a span carrying its request id and trace id, so every log line written
//! while serving it can be tied back to the request and to the trace across services. The ids
//! come from the `x-request-id` and `traceparent` headers (HTTP headers or gRPC metadata, both
//! are HTTP/2 headers on the wire); a missing request id is shown as `-`.
//!
//! When traces are recorded (see [`crate::traces`]) the span is also an OpenTelemetry span:
//! [`make_span`] makes it a child of the caller's `traceparent`, and [`current_trace`] reads
//! the current span's context, so what a hop sends downstream names *its* span as the parent.
//! When they are not, the hand-made [`TraceContext`] stored by the gateway carries the same
//! trace id without recording anything.

use http::{Extensions, HeaderMap, Request};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::{TraceContext, REQUEST_ID_HEADER, TRACEPARENT_HEADER};

/// The request's trace context: the one an earlier layer stored in the request's extensions
/// (so the header is parsed once per request), else the caller's `traceparent` continued, else a
/// new root.
pub fn request_trace(extensions: &Extensions, headers: &HeaderMap) -> TraceContext {
    extensions
        .get::<TraceContext>()
        .copied()
        .unwrap_or_else(|| {
            TraceContext::from_header_or_new(
                headers
                    .get(TRACEPARENT_HEADER)
                    .and_then(|v| v.to_str().ok()),
            )
        })
}

/// The context of `span` when it is a recorded OpenTelemetry span; `None` when traces are off.
fn otel_trace(span: &tracing::Span) -> Option<TraceContext> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| TraceContext {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    })
}

/// The trace context of the current span when it is an OpenTelemetry span (traces on),
/// else `fallback`. The `bool` says which: `true` means the context names the current span
/// itself, so it is sent downstream as it is; `false` means a child should be made.
pub fn current_trace(fallback: TraceContext) -> (TraceContext, bool) {
    match otel_trace(&tracing::Span::current()) {
        Some(trace) => (trace, true),
        None => (fallback, false),
    }
}

/// The current span's context, when traces are recorded (to hand to work done later, such as
/// a queued order request).
pub fn current_span_context() -> Option<TraceContext> {
    otel_trace(&tracing::Span::current())
}

/// The `traceparent` to send on an outgoing call made inside the current span, when traces
/// are on (services calling services outside a gateway request use this).
pub fn current_traceparent() -> Option<String> {
    current_span_context().map(|t| t.to_string())
}

/// The OpenTelemetry form of a context received from elsewhere (a header, a queued message).
pub fn remote_span_context(trace: &TraceContext) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace.trace_id),
        SpanId::from_bytes(trace.span_id),
        TraceFlags::new(trace.flags),
        true,
        TraceState::default(),
    )
}

/// Makes `span` a child of a span elsewhere (a caller, the buy a batch item belongs to). Call it
/// before anything reads the span's context: reading it fixes its trace id. Without the
/// OpenTelemetry layer this does nothing.
pub fn set_remote_parent(span: &tracing::Span, parent: &TraceContext) {
    let parent =
        opentelemetry::Context::new().with_remote_span_context(remote_span_context(parent));
    // Setting the parent fails only when the span is not recorded; then it has none.
    let _ = span.set_parent(parent);
}

/// Links `span` to each of these spans elsewhere: work that serves many requests at once (a
/// batch) names every one of them. Without the OpenTelemetry layer this does nothing.
pub fn link_all(span: &tracing::Span, traces: impl IntoIterator<Item = TraceContext>) {
    if span.is_disabled() {
        return;
    }
    for trace in traces {
        span.add_link(remote_span_context(&trace));
    }
}

/// Links the current span to the callers' spans named by these `traceparent` texts (empty or
/// malformed ones are skipped): a gRPC call carrying a batch of requests.
pub fn link_current<'a>(traceparents: impl IntoIterator<Item = &'a str>) {
    link_all(
        &tracing::Span::current(),
        traceparents.into_iter().filter_map(TraceContext::parse),
    );
}

/// Makes `span` a child of the caller's `traceparent`, when traces are on and the caller sent
/// one. Returns the span's own context when traces are on.
fn adopt_caller(span: &tracing::Span, headers: &HeaderMap) -> Option<TraceContext> {
    if let Some(caller) = headers
        .get(TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
    {
        set_remote_parent(span, &caller);
    }
    // Only spans that the OpenTelemetry layer records have a valid context.
    otel_trace(span)
}

/// Builds the request span from the request's headers (for `tower_http::trace::TraceLayer`).
/// HTTP requests are named `METHOD /path`; gRPC requests by their method path
/// (`flashsale.inventory.Inventory/Reserve`).
pub fn make_span<B>(request: &Request<B>) -> tracing::Span {
    let headers = request.headers();
    let request_id = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let path = request.uri().path();
    let grpc = headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
    let span = if grpc {
        tracing::info_span!(
            "request",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            request_id = %request_id,
            trace_id = tracing::field::Empty,
        )
    } else {
        tracing::info_span!(
            "request",
            otel.name = %format_args!("{} {}", request.method(), path),
            otel.kind = "server",
            method = %request.method(),
            path = %path,
            request_id = %request_id,
            trace_id = tracing::field::Empty,
        )
    };
    let trace = adopt_caller(&span, headers)
        .unwrap_or_else(|| request_trace(request.extensions(), headers));
    span.record("trace_id", tracing::field::display(trace.trace_id_hex()));
    span
}
