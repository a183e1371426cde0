//! Cross-cutting HTTP middleware of the gateway.
//!
//! * [`RandomRequestId`]: a request without an `x-request-id` gets a random UUID.
//! * [`ensure_trace`]: continues the caller's W3C trace or starts one, so the request span, the
//!   logs and every gRPC call share one trace id.
//! * [`budget`]: the request's time budget; a handler still running when it is spent is
//!   dropped and the client gets `504` at once.
//! * [`render_errors`]: every response names its trace (`traceparent` header); every error
//!   response gets the JSON error body with the request id and trace id.
//! * [`record_metrics`]: request counts and latency per route.
//! * [`panic_response`]: a panicking handler becomes a `500`; the process stays up.

use std::{any::Any, cell::RefCell, collections::HashMap, time::Duration};

use axum::{
    body::Body,
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use flashsale_telemetry::{TraceContext, REQUEST_ID_HEADER, TRACEPARENT_HEADER};
use tokio::time::Instant;
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::{
    app::AppState,
    error::{fields_for_status, ApiError, ErrorBody, ErrorDetail, ErrorFields},
    upstream::Deadline,
};

/// Makes request ids: random (version 4) UUIDs from the thread's fast generator. The `uuid`
/// crate's own `new_v4` asks the operating system for every id (a system call per request).
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        let mut text = uuid::Uuid::encode_buffer();
        header::HeaderValue::from_str(id.hyphenated().encode_lower(&mut text))
            .ok()
            .map(RequestId::new)
    }
}

/// Decides the request's trace context once (a child of the caller's `traceparent`, or a new
/// root) and stores it in the request's extensions for the span, the error body and every
/// upstream call.
pub async fn ensure_trace(mut request: Request, next: Next) -> Response {
    let trace = TraceContext::from_header_or_new(
        request
            .headers()
            .get(TRACEPARENT_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    request.extensions_mut().insert(trace);
    next.run(request).await
}

/// Enforces the request budget and makes the deadline available to upstream calls.
pub async fn budget(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let budget = Duration::from_millis(state.config.budget_ms);
    let deadline = Instant::now() + budget;
    request.extensions_mut().insert(Deadline(deadline));
    match tokio::time::timeout_at(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout().into_response(),
    }
}

/// Names the request's trace in a `traceparent` response header, and renders every error
/// response as the API's JSON error with the request id and trace id.
pub async fn render_errors(request: Request, next: Next) -> Response {
    // A reference-counted copy: turned into text only for an error.
    let request_id = request.headers().get(REQUEST_ID_HEADER).cloned();
    let trace = request
        .extensions()
        .get::<TraceContext>()
        .copied()
        .unwrap_or_else(TraceContext::new_root);
    // The request span's own context when traces are recorded, else the one ensure_trace chose.
    let (trace, _) = flashsale_telemetry::span::current_trace(trace);
    let mut response = next.run(request).await;
    if let Ok(value) = header::HeaderValue::from_bytes(&trace.header_bytes()) {
        response.headers_mut().insert(TRACEPARENT_HEADER, value);
    }
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let request_id = request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    with_error_body(response, request_id, &trace)
}

/// An error response with the API's JSON error body: the code and message the handler gave
/// (or those of its status), the request id and the trace id.
pub(crate) fn with_error_body(
    response: Response,
    request_id: &str,
    trace: &TraceContext,
) -> Response {
    let status = response.status();
    let (mut parts, _body) = response.into_parts();
    let fields = parts
        .extensions
        .remove::<ErrorFields>()
        .unwrap_or_else(|| fields_for_status(status));
    let body = Json(ErrorBody {
        error: ErrorDetail {
            code: fields.code,
            message: fields.message,
            request_id: request_id.to_owned(),
            trace_id: trace.trace_id_hex(),
        },
    })
    .into_response();
    let (body_parts, body) = body.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(ct) = body_parts.headers.get(header::CONTENT_TYPE) {
        parts.headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    Response::from_parts(parts, body)
}

/// Counts requests and records latency, labelled by route template and status.
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let (requests, latency) = route_metrics(route, response.status().as_u16());
    requests.increment(1);
    latency.record(started.elapsed().as_secs_f64());
    response
}

/// The request counter and latency histogram of a route and status. Each thread keeps the
/// handles it looked up once, so a request neither formats labels nor searches the registry.
pub(crate) fn route_metrics(route: &str, status: u16) -> (metrics::Counter, metrics::Histogram) {
    type Handles = HashMap<Box<str>, HashMap<u16, (metrics::Counter, metrics::Histogram)>>;
    thread_local! {
        static HANDLES: RefCell<Handles> = RefCell::new(HashMap::new());
    }
    HANDLES.with_borrow_mut(|handles| {
        if !handles.contains_key(route) {
            handles.insert(route.into(), HashMap::new());
        }
        let by_status = handles.get_mut(route).map(|by_status| {
            by_status
                .entry(status)
                .or_insert_with(|| {
                    (
                        metrics::counter!(flashsale_telemetry::metrics::HTTP_REQUESTS,
                            "route" => route.to_owned(), "status" => status.to_string()),
                        metrics::histogram!(flashsale_telemetry::metrics::HTTP_LATENCY,
                            "route" => route.to_owned()),
                    )
                })
                .clone()
        });
        by_status.unwrap_or_else(|| (metrics::Counter::noop(), metrics::Histogram::noop()))
    })
}

/// The response for a handler that panicked: a logged `500`.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    tracing::error!(panic = %detail, "handler panicked");
    ApiError::internal().into_response()
}
