//! Answers the gateway knows without doing anything, given before the middleware stack.
//!
//! The sale page's data is what the stampede refreshes, and once the pages are live
//! ([`crate::live_sales`]) answering it is a map lookup. The full stack around a handler — a
//! request span and its trace export, the time budget's timer, the concurrency permit, the body
//! limit, the router — exists for requests that call services, and for a page read it would
//! cost several times the answer. So [`FastPath`], the outermost service, looks at each request
//! first:
//!
//! * `GET /api/v1/sales`, `GET /api/v1/sales/{id}` (a plain decimal id) and the sale's live
//!   stream `GET /api/v1/sales/{id}/events` with live pages are answered on the spot
//!   ([`answer`]) — a stream subscriber then holds its connection and a channel receiver, no
//!   request span or middleware state for as long as it stays;
//! * `POST /api/v1/sales/{id}/orders` on a sale this gateway surely knows sold out, from a
//!   client whose token it already authenticated, with a valid key and body, is answered
//!   `409 sold_out` ([`sold_out`]) — the answer the buy flow would give from the same memory,
//!   checked in the same order (authentication, key, body, quantity, per-user limit, an order
//!   this gateway accepted under that key: anything else goes to the flow);
//! * every other request (and these, when any condition fails) goes down the stack unchanged.
//!
//! What an answer here keeps from the stack: the conditional headers (`ETag`, `Cache-Control`,
//! `304`), the JSON error body with the request id and trace id, an `x-request-id` (the
//! caller's or a new one) and a `traceparent` naming the request's trace, and the request
//! counter and latency histogram of its route (and the buy outcome counter). What it skips: the
//! request span (no trace is recorded for these answers), the time budget and load shedding
//! (answering costs less than shedding).

use std::{
    convert::Infallible,
    future::{ready, Ready},
    task::{Context, Poll},
};

use std::net::IpAddr;

use axum::{
    body::{Body, HttpBody},
    extract::{FromRequestParts, Request},
    http::{header::HeaderValue, request::Parts, HeaderMap, Method},
    response::{IntoResponse, Response},
};
use flashsale_telemetry::{TraceContext, REQUEST_ID_HEADER, TRACEPARENT_HEADER};
use futures::future::{BoxFuture, Either};
use tokio::time::Instant;
use tower::{Service, ServiceExt};
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::{
    api::BuyRequest,
    app::AppState,
    buy::{outcome::Refusal, BuyInput},
    error::ApiError,
    error_code::ErrorCode,
    extract::{parse_json, ClientInfo, IdempotencyKey},
    middleware::{route_metrics, with_error_body, RandomRequestId},
};

/// The route templates the fast path answers, as the metrics label them.
const SALES: &str = "/api/v1/sales";
const SALE: &str = "/api/v1/sales/{id}";
const BUY: &str = "/api/v1/sales/{id}/orders";
const EVENTS: &str = "/api/v1/sales/{id}/events";

/// The largest buy body the fast path reads (`{"quantity": 1}` is 15 bytes).
const MAX_BODY: usize = 1024;

/// What a request asks that the fast path may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// `GET /api/v1/sales`.
    Sales,
    /// `GET /api/v1/sales/{id}`.
    Sale(i64),
    /// `GET /api/v1/sales/{id}/events`.
    Events(i64),
}

/// The read a request is, when it is one the fast path knows; `None` sends it down the stack
/// (which also validates it: an odd id gets its `400` there).
fn read_of(method: &Method, path: &str) -> Option<Read> {
    if method != Method::GET {
        return None;
    }
    let rest = path.strip_prefix(SALES)?;
    if rest.is_empty() {
        return Some(Read::Sales);
    }
    let rest = rest.strip_prefix('/')?;
    let (digits, read): (&str, fn(i64) -> Read) = match rest.strip_suffix("/events") {
        Some(digits) => (digits, Read::Events),
        None => (rest, Read::Sale),
    };
    // At most 18 digits: always an i64, no sign, no surprises.
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(read)
}

/// The request id a response carries: the caller's, or a new one.
fn request_id_of(request: &Request) -> Option<HeaderValue> {
    match request.headers().get(REQUEST_ID_HEADER) {
        Some(id) => Some(id.clone()),
        None => RandomRequestId
            .make_request_id(request)
            .map(RequestId::into_header_value),
    }
}

/// The trace of a request: a child of the caller's `traceparent`, or a new one.
fn trace_of(headers: &HeaderMap) -> TraceContext {
    TraceContext::from_header_or_new(
        headers
            .get(TRACEPARENT_HEADER)
            .and_then(|v| v.to_str().ok()),
    )
}

/// What the stack adds to every answer: the JSON error body (for an error), the request id and
/// `traceparent` headers, the route's request counter and latency.
fn finish(
    response: Response,
    request_id: HeaderValue,
    trace: &TraceContext,
    route: &str,
    started: Instant,
) -> Response {
    let status = response.status();
    let mut response = if status.is_client_error() || status.is_server_error() {
        with_error_body(response, request_id.to_str().unwrap_or("-"), trace)
    } else {
        response
    };
    let out = response.headers_mut();
    out.insert(REQUEST_ID_HEADER, request_id);
    if let Ok(value) = HeaderValue::from_bytes(&trace.header_bytes()) {
        out.insert(TRACEPARENT_HEADER, value);
    }
    let (requests, latency) = route_metrics(route, status.as_u16());
    requests.increment(1);
    latency.record(started.elapsed().as_secs_f64());
    response
}

/// The answer to a sale read from live pages, or `None`.
fn answer(state: &AppState, request: &Request) -> Option<Response> {
    let read = read_of(request.method(), request.uri().path())?;
    let started = Instant::now();
    let headers = request.headers();
    let (route, response) = match read {
        Read::Sales => (SALES, state.live.list()?.respond(headers)),
        Read::Sale(id) => (
            SALE,
            match state.live.page(id)? {
                Some(page) => page.respond(headers),
                None => ApiError::not_found("no such sale").into_response(),
            },
        ),
        Read::Events(id) => (
            EVENTS,
            match state.live.subscribe(id) {
                Some(watcher) => crate::live_sales::event_stream(watcher),
                None if state.live.is_live() => ApiError::not_found("no such sale").into_response(),
                // Not live: the handler asks the inventory.
                None => return None,
            },
        ),
    };
    let request_id = request_id_of(request)?;
    Some(finish(
        response,
        request_id,
        &trace_of(headers),
        route,
        started,
    ))
}

/// The sale id of a buy (`POST /api/v1/sales/{id}/orders`, a plain decimal id).
fn buy_of(method: &Method, path: &str) -> Option<i64> {
    if method != Method::POST {
        return None;
    }
    let id = path
        .strip_prefix("/api/v1/sales/")?
        .strip_suffix("/orders")?;
    if id.is_empty() || id.len() > 18 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

/// The user a request's token names, when this gateway already authenticated that token for
/// this client (the memo the `AuthUser` extractor consults first); `None` sends the request
/// to the stack, which authenticates it fully.
async fn remembered_user(state: &AppState, parts: &mut Parts) -> Option<(i64, IpAddr)> {
    if state.config.insecure_skip_auth {
        return None;
    }
    let client = ClientInfo::from_request_parts(parts, state).await.ok()?;
    let token = crate::auth::bearer(parts).ok()?;
    let binding = state
        .config
        .bind_sessions
        .then_some((client.ip, client.user_agent.as_str()));
    let known = state.sessions.verified(token, binding)?;
    Some((known.user_id, client.ip))
}

/// What the fast path made of a request.
enum Handled {
    /// Answered here.
    Answered(Response),
    /// Left to the stack, unchanged.
    Stack(Request),
}

/// `409 sold_out` for a buy of a sale this gateway surely knows sold out, when the buy flow
/// would give exactly that answer; otherwise the request back, unchanged, for the stack.
async fn sold_out(state: &AppState, request: Request, sale_id: i64) -> Handled {
    let started = Instant::now();
    let now = flashsale_kernel::now_ms();
    let Some(sale) = state.sales.cached(sale_id).await else {
        return Handled::Stack(request);
    };
    if now < sale.starts_at_ms || !state.sales.surely_sold_out(&sale, now) {
        return Handled::Stack(request);
    }
    // A small body of a declared length only; anything else is the stack's to read.
    if !matches!(request.body().size_hint().exact(), Some(n) if n <= MAX_BODY as u64) {
        return Handled::Stack(request);
    }
    let Some(request_id) = request_id_of(&request) else {
        return Handled::Stack(request);
    };
    let (mut parts, body) = request.into_parts();
    let Some((user_id, client_ip)) = remembered_user(state, &mut parts).await else {
        return Handled::Stack(Request::from_parts(parts, body));
    };
    let Ok(IdempotencyKey(key)) = IdempotencyKey::from_request_parts(&mut parts, state).await
    else {
        return Handled::Stack(Request::from_parts(parts, body));
    };
    let trace = trace_of(&parts.headers);
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => bytes,
        // The client sent less than it declared, or went away: nothing left to hand on.
        Err(_) => {
            let error =
                ApiError::bad_request(ErrorCode::BadBody, "could not read the request body");
            return Handled::Answered(finish(
                error.into_response(),
                request_id,
                &trace,
                BUY,
                started,
            ));
        }
    };
    let back = |parts, bytes| Handled::Stack(Request::from_parts(parts, Body::from(bytes)));
    let Ok(BuyRequest { quantity }) = parse_json(&parts.headers, &bytes, true) else {
        return back(parts, bytes);
    };
    let input = BuyInput {
        user_id,
        client_ip,
        sale_id,
        idempotency_key: key,
        quantity,
        accepted_at_ms: now,
    };
    if input.check_quantity().is_err()
        || quantity > sale.per_user_limit
        || state.accepted.contains_key(&input.order_id().as_u128())
    {
        return back(parts, bytes);
    }
    let refusal = Refusal::SoldOutLocal.refuse(sale_id).into_response();
    Handled::Answered(finish(refusal, request_id, &trace, BUY, started))
}

/// The outermost service of the gateway: answers what it can ([`answer`]), hands the rest to
/// `inner` (the full stack).
#[derive(Debug, Clone)]
pub struct FastPath<S> {
    state: AppState,
    inner: S,
}

impl<S> FastPath<S> {
    /// `inner` behind the fast path.
    pub fn new(state: AppState, inner: S) -> Self {
        Self { state, inner }
    }
}

impl<S> Service<Request> for FastPath<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        Ready<Result<Response, Infallible>>,
        Either<BoxFuture<'static, Result<Response, Infallible>>, S::Future>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if let Some(sale_id) = buy_of(request.method(), request.uri().path()) {
            let state = self.state.clone();
            let inner = self.inner.clone();
            return Either::Right(Either::Left(Box::pin(async move {
                match sold_out(&state, request, sale_id).await {
                    Handled::Answered(response) => Ok(response),
                    Handled::Stack(request) => inner.oneshot(request).await,
                }
            })));
        }
        match answer(&self.state, &request) {
            Some(response) => Either::Left(ready(Ok(response))),
            None => Either::Right(Either::Right(self.inner.call(request))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_sale_reads_are_taken() {
        let get = Method::GET;
        assert_eq!(read_of(&get, "/api/v1/sales"), Some(Read::Sales));
        assert_eq!(read_of(&get, "/api/v1/sales/42"), Some(Read::Sale(42)));
        assert_eq!(read_of(&get, "/api/v1/sales/007"), Some(Read::Sale(7)));
        assert_eq!(
            read_of(&get, "/api/v1/sales/42/events"),
            Some(Read::Events(42))
        );
        for path in [
            "/api/v1/sales/",
            "/api/v1/sales/-1",
            "/api/v1/sales/+1",
            "/api/v1/sales/1.5",
            "/api/v1/sales/abc",
            "/api/v1/sales/1/orders",
            "/api/v1/sales//events",
            "/api/v1/sales/x/events",
            "/api/v1/salesx",
            "/api/v1/sales/9999999999999999999",
            "/api/v1/orders",
        ] {
            assert_eq!(read_of(&get, path), None, "{path}");
        }
        assert_eq!(read_of(&Method::POST, "/api/v1/sales"), None);
        assert_eq!(read_of(&Method::HEAD, "/api/v1/sales/1"), None);
    }

    #[test]
    fn only_plain_buys_are_looked_at() {
        let post = Method::POST;
        assert_eq!(buy_of(&post, "/api/v1/sales/42/orders"), Some(42));
        for path in [
            "/api/v1/sales//orders",
            "/api/v1/sales/-1/orders",
            "/api/v1/sales/x/orders",
            "/api/v1/sales/1/orders/",
            "/api/v1/sales/1",
            "/api/v1/sales/99999999999999999999/orders",
        ] {
            assert_eq!(buy_of(&post, path), None, "{path}");
        }
        assert_eq!(buy_of(&Method::GET, "/api/v1/sales/1/orders"), None);
    }
}
