//! RED metrics of a gRPC server: requests by method and status, and latency by method.
//!
//! [`GrpcMetricsLayer`] wraps a tonic server. The method label is the request path without
//! its leading `/` (`flashsale.inventory.v1.Inventory/Reserve`); paths the server does not
//! implement are counted as `unknown`, so a client cannot grow the label set. The status is the
//! `grpc-status` of a trailers-only response (how tonic answers errors); a response that
//! starts normally is counted as `OK` (its status travels in trailers at the end of the
//! stream, after this layer has measured it). Latency runs until the response headers, which
//! for unary calls is the whole handler. A request refused by the load shedding below this
//! layer is counted as `RESOURCE_EXHAUSTED`. Requests that are not gRPC (`GET /metrics` on the
//! same port) are not counted.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};

use crate::metrics::{GRPC_LATENCY, GRPC_REQUESTS};

/// Adds [`GrpcMetrics`] around a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// The service [`GrpcMetricsLayer`] builds.
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

/// The name of a gRPC status code, as in the gRPC spec (`OK`, `NOT_FOUND`, …).
fn code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "OK",
        b"1" => "CANCELLED",
        b"2" => "UNKNOWN",
        b"3" => "INVALID_ARGUMENT",
        b"4" => "DEADLINE_EXCEEDED",
        b"5" => "NOT_FOUND",
        b"6" => "ALREADY_EXISTS",
        b"7" => "PERMISSION_DENIED",
        b"8" => "RESOURCE_EXHAUSTED",
        b"9" => "FAILED_PRECONDITION",
        b"10" => "ABORTED",
        b"11" => "OUT_OF_RANGE",
        b"12" => "UNIMPLEMENTED",
        b"13" => "INTERNAL",
        b"14" => "UNAVAILABLE",
        b"15" => "DATA_LOSS",
        b"16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

fn record(method: String, code: &'static str, started: Instant) {
    let method = if code == "UNIMPLEMENTED" {
        "unknown".to_owned()
    } else {
        method
    };
    metrics::histogram!(GRPC_LATENCY, "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(GRPC_REQUESTS, "method" => method, "code" => code).increment(1);
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for GrpcMetrics<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        let method = grpc.then(|| request.uri().path().trim_start_matches('/').to_owned());
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            if let Some(method) = method {
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .map_or("OK", |c| code_name(c.as_bytes())),
                    // Below this layer only load shedding fails a request (the services
                    // themselves answer every error as a gRPC status).
                    Err(_) => "RESOURCE_EXHAUSTED",
                };
                record(method, code, started);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_status_code() {
        assert_eq!(code_name(b"0"), "OK");
        assert_eq!(code_name(b"4"), "DEADLINE_EXCEEDED");
        assert_eq!(code_name(b"16"), "UNAUTHENTICATED");
        assert_eq!(code_name(b"99"), "UNKNOWN");
    }
}
