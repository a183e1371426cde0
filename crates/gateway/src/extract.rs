//! Request extractors that answer bad input with the API's JSON errors.
//!
//! * [`ApiJson`]: a JSON body. Malformed JSON → `400`, wrong types or missing fields → `422`,
//!   wrong content type → `415`, body over the limit → `413`.
//! * [`ApiPath`]: a path parameter; one that does not parse → `400`.
//! * [`ClientInfo`]: the client's IP (through trusted proxies only) and User-Agent.

use std::net::{IpAddr, SocketAddr};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, ConnectInfo, FromRequest, FromRequestParts, Request},
    http::{header, request::Parts, HeaderMap, StatusCode},
};
use serde::de::DeserializeOwned;

use crate::{
    app::AppState,
    client_ip::client_ip,
    error::{ApiError, ErrorCode},
};

/// A JSON request body.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// Parses a JSON body; an empty body parses as `{}` when `empty_as_object` is set.
pub fn parse_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
    empty_as_object: bool,
) -> Result<T, ApiError> {
    if body.is_empty() && empty_as_object {
        return serde_json::from_slice(b"{}")
            .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")));
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("application/json") || v.ends_with("+json")
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "expected Content-Type: application/json",
        ));
    }
    let value = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::invalid(format!("invalid request body: {e}"))
        }
        _ => ApiError::bad_request(ErrorCode::MalformedJson, format!("malformed JSON: {e}")),
    })?;
    // serde fills a struct from a JSON array by position (`[1]` would read as `{"quantity": 1}`);
    // every body of this API is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid("the request body must be a JSON object"));
    }
    Ok(value)
}

fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "request body too large",
        )
    } else {
        ApiError::bad_request(ErrorCode::BadBody, "could not read the request body")
    }
}

/// Reads the whole body, mapping failures (including the size limit) to API errors.
pub async fn read_body<S: Send + Sync>(
    request: Request,
    state: &S,
) -> Result<(HeaderMap, Bytes), ApiError> {
    let headers = request.headers().clone();
    let bytes = Bytes::from_request(request, state)
        .await
        .map_err(body_error)?;
    Ok((headers, bytes))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (headers, bytes) = read_body(request, state).await?;
        parse_json(&headers, &bytes, false).map(ApiJson)
    }
}

/// A path parameter that must parse.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| {
                ApiError::bad_request(
                    ErrorCode::BadPath,
                    format!("invalid path parameter: {}", e.body_text()),
                )
            })
    }
}

/// The client as the gateway sees it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// Client IP (from `X-Forwarded-For` only behind a trusted proxy).
    pub ip: IpAddr,
    /// `User-Agent`, empty when absent.
    pub user_agent: String,
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or_else(|| {
                tracing::error!("no peer address: serve the router with connect info");
                ApiError::internal()
            })?;
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            ip: client_ip(peer, &parts.headers, &state.config.trusted_proxies),
            user_agent,
        })
    }
}

/// A JSON request body that may be left empty (then it parses as `{}`).
#[derive(Debug, Clone)]
pub struct ApiJsonOrEmpty<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJsonOrEmpty<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (headers, bytes) = read_body(request, state).await?;
        parse_json(&headers, &bytes, true).map(ApiJsonOrEmpty)
    }
}

/// The `Idempotency-Key` header: 1 to 128 visible ASCII characters, required.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get("idempotency-key").ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::MissingIdempotencyKey,
                "the Idempotency-Key header is required",
            )
        })?;
        let key = value
            .to_str()
            .ok()
            .filter(|k| (1..=128).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidIdempotencyKey,
                    "Idempotency-Key must be 1 to 128 visible ASCII characters",
                )
            })?;
        Ok(Self(key.to_owned()))
    }
}
