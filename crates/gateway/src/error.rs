//! API errors and their JSON form.
//!
//! Every error a client sees is `{"error": {"code", "message", "request_id"}}` with the right
//! status; the codes are the variants of [`ErrorCode`]. Handlers return an [`ApiError`]; its
//! response carries the code and message as an extension, and
//! [`crate::middleware::render_errors`] writes the body with the request id, so errors produced
//! outside handlers (unknown routes, timeouts, panics, oversized bodies) look the same. Internal
//! causes are logged, never sent.

use axum::{
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

pub use crate::error_code::ErrorCode;

/// An error answer: status, stable machine-readable code, human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code, e.g. [`ErrorCode::SoldOut`].
    pub code: ErrorCode,
    /// Message safe to show the client.
    pub message: String,
    /// Seconds to wait before retrying (`429`).
    pub retry_after_secs: Option<u64>,
}

/// The error fields, attached to the response for the rendering middleware.
#[derive(Debug, Clone)]
pub struct ErrorFields {
    /// Stable code.
    pub code: ErrorCode,
    /// Message.
    pub message: String,
}

/// JSON body of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Details of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Id of the request, also in the `x-request-id` header and the server logs.
    pub request_id: String,
    /// W3C trace id of the request, also in the server logs of every service it reached.
    pub trace_id: String,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// 400.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    /// 409.
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// 422.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidInput,
            message,
        )
    }
    /// 429 with `Retry-After`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "too many requests; slow down",
            )
        }
    }
    /// 503: a service behind the gateway failed or is unreachable.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "service temporarily unavailable; retry",
        )
    }
    /// 503 with `Retry-After: 1`: the shared rate limiter cannot be reached.
    pub fn limiter_unavailable() -> Self {
        Self {
            retry_after_secs: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "service temporarily unavailable; retry",
            )
        }
    }
    /// 503 with `Retry-After: 1`: this gateway, or the service behind it, is saturated and
    /// sheds the request at once rather than queueing it.
    pub fn overloaded() -> Self {
        Self {
            retry_after_secs: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Overloaded,
                "too busy to take this request now; retry shortly",
            )
        }
    }
    /// 504: the request budget is spent.
    pub fn timeout() -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Timeout,
            "the request took longer than its time budget",
        )
    }
    /// 500.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error",
        )
    }

    /// Maps a failed gRPC call: deadline → 504, invalid argument → 422 with the service's
    /// message, shed (resource exhausted) → 503 with `Retry-After`, anything else → 503 (cause
    /// logged).
    pub fn from_status(status: tonic::Status) -> Self {
        match status.code() {
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => Self::timeout(),
            tonic::Code::InvalidArgument => Self::invalid(status.message()),
            tonic::Code::ResourceExhausted => Self::overloaded(),
            code => {
                tracing::error!(?code, message = status.message(), "upstream call failed");
                Self::unavailable()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(secs));
        }
        response.extensions_mut().insert(ErrorFields {
            code: self.code,
            message: self.message,
        });
        response
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        Self::from_status(status)
    }
}

/// Fields for an error response that no handler produced (by status alone).
pub fn fields_for_status(status: StatusCode) -> ErrorFields {
    let (code, message) = match status {
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "method not allowed on this resource",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::PayloadTooLarge, "request body too large"),
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => (
            ErrorCode::Timeout,
            "the request took longer than its time budget",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ),
        s if s.is_server_error() => (ErrorCode::Internal, "internal error"),
        _ => (ErrorCode::BadRequest, "bad request"),
    };
    ErrorFields {
        code,
        message: message.into(),
    }
}
