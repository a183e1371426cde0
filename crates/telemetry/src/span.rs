//! The per-request span, built the same way by the HTTP gateway and the gRPC servers.
//!
//! Every request gets a span carrying its request id and trace id, so every log line written
//! while serving it can be tied back to the request and to the trace across services. The ids
//! come from the `x-request-id` and `traceparent` headers (HTTP headers or gRPC metadata, both
//! are HTTP/2 headers on the wire); a missing request id is shown as `-`.

use http::{Extensions, HeaderMap, Request};

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

/// Builds the request span from the request's headers (for `tower_http::trace::TraceLayer`).
pub fn make_span<B>(request: &Request<B>) -> tracing::Span {
    let headers = request.headers();
    let request_id = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let trace = request_trace(request.extensions(), headers);
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
        trace_id = %trace.trace_id_hex(),
    )
}
