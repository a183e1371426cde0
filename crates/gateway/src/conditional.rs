//! Conditional reads: the sale list and a sale carry a strong `ETag` and a short
//! `Cache-Control`, and `If-None-Match` with a current tag is answered `304 Not Modified`.
//!
//! A shopper's page refreshes the sale every second or so; a browser cache, a CDN or a reverse
//! proxy in front of the gateway can then keep the answer for [`MAX_AGE`] and revalidate it for
//! the price of a header. The tag is a hash of the exact JSON body, so it changes with anything
//! the body shows (`remaining` included) and two gateways give the same tag for the same answer.
//! `If-None-Match` is compared weakly, as RFC 9110 asks (`W/"x"` matches `"x"`); `*` matches any
//! current answer.

use axum::{
    body::Bytes,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// How long a cache may keep a read answer without asking again.
pub const MAX_AGE: &str = "public, max-age=1";

/// The strong tag of a body: 128 bits of its SHA-256, quoted.
fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// Whether an `If-None-Match` list names `tag` (weak comparison) or is `*`.
fn none_match(headers: &HeaderMap, tag: &str) -> bool {
    fn opaque(t: &str) -> &str {
        t.trim().trim_start_matches("W/")
    }
    let tag = opaque(tag);
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|candidate| candidate.trim() == "*" || opaque(candidate) == tag)
}

/// A read answer rendered once: its JSON body and strong tag. The sale pages the gateway
/// keeps ([`crate::live_sales`]) are rendered when the stock moves, not per request, so serving
/// one costs a header comparison and a reference-counted body.
#[derive(Debug, Clone)]
pub struct Tagged {
    body: Bytes,
    etag: HeaderValue,
}

impl Tagged {
    /// Renders `value` as JSON and tags it.
    pub fn json<T: Serialize>(value: &T) -> Result<Self, ApiError> {
        let body = serde_json::to_vec(value).map_err(|e| {
            tracing::error!(error = %e, "cannot serialise a read answer");
            ApiError::internal()
        })?;
        Ok(Self::from_body(body))
    }

    /// Tags a rendered JSON body.
    pub fn from_body(body: Vec<u8>) -> Self {
        // A quoted hex string is always a valid header value.
        let etag = HeaderValue::from_str(&etag(&body))
            .unwrap_or_else(|_| HeaderValue::from_static("\"\""));
        Self {
            body: Bytes::from(body),
            etag,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The answer to a request with these headers: `304` when it already holds this tag, else
    /// `200` with the body.
    pub fn respond(&self, headers: &HeaderMap) -> Response {
        let tag = self.etag.to_str().unwrap_or_default();
        let cache = HeaderValue::from_static(MAX_AGE);
        if none_match(headers, tag) {
            return (
                StatusCode::NOT_MODIFIED,
                [
                    (header::ETAG, self.etag.clone()),
                    (header::CACHE_CONTROL, cache),
                ],
            )
                .into_response();
        }
        (
            StatusCode::OK,
            [
                (header::ETAG, self.etag.clone()),
                (header::CACHE_CONTROL, cache),
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
            ],
            self.body.clone(),
        )
            .into_response()
    }
}

/// `value` as JSON with its tag and cache lifetime, or `304` when the request already holds it.
pub fn json<T: Serialize>(headers: &HeaderMap, value: &T) -> Result<Response, ApiError> {
    Ok(Tagged::json(value)?.respond(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn tags_follow_the_body() {
        assert_eq!(etag(b"{\"a\":1}"), etag(b"{\"a\":1}"));
        assert_ne!(etag(b"{\"remaining\":1}"), etag(b"{\"remaining\":0}"));
        let tag = etag(b"x");
        assert!(tag.starts_with('"') && tag.ends_with('"') && tag.len() == 34);
    }

    #[test]
    fn if_none_match_is_compared_weakly_over_every_listed_tag() {
        let tag = "\"abc\"";
        assert!(none_match(&with(&["\"abc\""]), tag));
        assert!(none_match(&with(&["W/\"abc\""]), tag));
        assert!(none_match(&with(&["\"x\", \"abc\""]), tag));
        assert!(none_match(&with(&["\"x\"", "\"abc\""]), tag));
        assert!(none_match(&with(&["*"]), tag));
        assert!(!none_match(&with(&[]), tag));
        assert!(!none_match(&with(&["\"abd\""]), tag));
        assert!(
            !none_match(&with(&["abc"]), tag),
            "an unquoted tag is another tag"
        );
    }

    #[test]
    fn a_current_tag_gets_304_without_a_body_and_another_gets_the_body() {
        let value = serde_json::json!({"id": 1, "remaining": 5});
        let first = json(&HeaderMap::new(), &value).unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.headers()[header::CACHE_CONTROL], MAX_AGE);
        let tag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = json(&with(&[&tag]), &value).unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], tag.as_str());
        let changed = serde_json::json!({"id": 1, "remaining": 4});
        let fresh = json(&with(&[&tag]), &changed).unwrap();
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_ne!(fresh.headers()[header::ETAG], tag.as_str());
    }
}
