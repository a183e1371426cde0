//! Every machine-readable error code the HTTP API can answer, in one enum.
//!
//! A client branches on `error.code`, so the codes are part of the API's contract: they are
//! listed here once, serialised as the snake_case strings clients have always seen (`sold_out`,
//! `rate_limited`, ...), and published in the OpenAPI document as the `ErrorCode` schema (the
//! type of `ErrorDetail.code`). Adding a code is adding a variant here; renaming one breaks
//! clients.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Stable machine-readable code of an error answer (`error.code` in the JSON body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// `400`: a request the gateway could not make sense of (no more precise code applies).
    BadRequest,
    /// `400`: the body is not well-formed JSON.
    MalformedJson,
    /// `400`: the request body could not be read.
    BadBody,
    /// `400`: a path parameter does not parse.
    BadPath,
    /// `400`: the `Idempotency-Key` header is missing.
    MissingIdempotencyKey,
    /// `400`: the `Idempotency-Key` header is not 1 to 128 visible ASCII characters.
    InvalidIdempotencyKey,
    /// `400`: a trace id is not 32 lowercase hex digits.
    InvalidTraceId,
    /// `401`: no valid token, or its session is gone.
    Unauthorized,
    /// `403`: authenticated, but not allowed (admin routes).
    Forbidden,
    /// `404`: no such resource (route, sale, order, trace).
    NotFound,
    /// `405`: the route exists, not with this method.
    MethodNotAllowed,
    /// `409`: the sale has no stock left.
    SoldOut,
    /// `409`: the sale is over.
    SaleEnded,
    /// `409`: the buyer already holds the per-user limit of this sale.
    PerUserLimitReached,
    /// `409`: the order is not in a state that allows this transition.
    IllegalTransition,
    /// `413`: the request body is larger than the limit.
    PayloadTooLarge,
    /// `415`: the body is not `application/json`.
    UnsupportedMediaType,
    /// `422`: well-formed input that breaks a rule (bad quantity, email, password, ...).
    InvalidInput,
    /// `422`: the `Idempotency-Key` was already used for a different request.
    IdempotencyKeyReused,
    /// `425`: the sale has not started yet.
    SaleNotStarted,
    /// `429`: too many attempts; see `Retry-After`.
    RateLimited,
    /// `500`: a bug; logged.
    Internal,
    /// `503`: a service behind the gateway (or the shared rate limiter) cannot be reached.
    Unavailable,
    /// `503`: too busy to take this request now; see `Retry-After`.
    Overloaded,
    /// `504`: the request budget is spent.
    Timeout,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [Self; 25] = [
        Self::BadRequest,
        Self::MalformedJson,
        Self::BadBody,
        Self::BadPath,
        Self::MissingIdempotencyKey,
        Self::InvalidIdempotencyKey,
        Self::InvalidTraceId,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::SoldOut,
        Self::SaleEnded,
        Self::PerUserLimitReached,
        Self::IllegalTransition,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::InvalidInput,
        Self::IdempotencyKeyReused,
        Self::SaleNotStarted,
        Self::RateLimited,
        Self::Internal,
        Self::Unavailable,
        Self::Overloaded,
        Self::Timeout,
    ];

    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::MalformedJson => "malformed_json",
            Self::BadBody => "bad_body",
            Self::BadPath => "bad_path",
            Self::MissingIdempotencyKey => "missing_idempotency_key",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::InvalidTraceId => "invalid_trace_id",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::SoldOut => "sold_out",
            Self::SaleEnded => "sale_ended",
            Self::PerUserLimitReached => "per_user_limit_reached",
            Self::IllegalTransition => "illegal_transition",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::InvalidInput => "invalid_input",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::SaleNotStarted => "sale_not_started",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
            Self::Unavailable => "unavailable",
            Self::Overloaded => "overloaded",
            Self::Timeout => "timeout",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_wire_form_is_the_snake_case_name_and_each_code_is_distinct() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::json!(code.as_str()));
            assert_eq!(code.to_string(), code.as_str());
            let back: ErrorCode = serde_json::from_value(json).unwrap();
            assert_eq!(back, code);
            assert!(seen.insert(code.as_str()), "{code} listed twice");
        }
    }

    #[test]
    fn the_codes_clients_already_branch_on_are_unchanged() {
        let wire: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        for code in [
            "sold_out",
            "sale_ended",
            "sale_not_started",
            "per_user_limit_reached",
            "idempotency_key_reused",
            "rate_limited",
            "invalid_input",
            "not_found",
            "unauthorized",
            "forbidden",
            "unavailable",
            "overloaded",
            "timeout",
            "missing_idempotency_key",
            "invalid_idempotency_key",
            "illegal_transition",
        ] {
            assert!(wire.contains(&code), "{code} missing");
        }
    }
}
