//! JWT issue and verification (RFC 8725 practices).
//!
//! Tokens are HS256-signed, carry `iss`, `aud`, `sub` (user id), `jti` (session id), `iat`,
//! `nbf` and `exp`, and a `kid` header naming the signing key. Verification accepts exactly one
//! algorithm (HS256) whatever the header says, so `alg: none` and algorithm confusion are
//! refused; `kid` only selects a key, never the algorithm.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Claims carried by a flashsale token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Session id: the key of the session this token belongs to.
    pub jti: String,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before (Unix seconds).
    pub nbf: i64,
    /// Expiry (Unix seconds).
    pub exp: i64,
}

/// Why a token was refused. The message is safe to show a client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The token is malformed, forged, expired, not yet valid or for someone else.
    #[error("invalid token")]
    Invalid,
    /// The token names a key this service does not know.
    #[error("invalid token")]
    UnknownKey,
    /// Signing failed (a key problem on our side).
    #[error("cannot sign token")]
    Sign,
}

/// The signing key and the rules a token must satisfy.
#[derive(Clone)]
pub struct TokenKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Leeway for `exp`/`nbf`, in seconds, to absorb clock skew between machines.
pub const LEEWAY_SECS: u64 = 5;

impl TokenKeys {
    /// Keys from a shared secret (at least 32 bytes), a key id, and the `iss`/`aud` values.
    pub fn new(kid: &str, secret: &[u8], issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            kid: kid.to_owned(),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// Signs a token for `user_id` and session `jti`, valid from `now` for `ttl_secs`.
    pub fn issue(
        &self,
        user_id: i64,
        jti: &str,
        now: i64,
        ttl_secs: i64,
    ) -> Result<String, TokenError> {
        let claims = Claims {
            sub: user_id.to_string(),
            jti: jti.to_owned(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + ttl_secs,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|_| TokenError::Sign)
    }

    /// Verifies signature, algorithm, `typ`, `kid`, `iss`, `aud`, `nbf` and `exp`.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::HS256 || header.typ.as_deref() != Some("JWT") {
            return Err(TokenError::Invalid);
        }
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(TokenError::UnknownKey);
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| TokenError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn keys() -> TokenKeys {
        TokenKeys::new("k1", SECRET, "flashsale", "flashsale-api")
    }

    fn now() -> i64 {
        flashsale_storage::now_ms() / 1000
    }

    #[test]
    fn issued_token_verifies() {
        let token = keys().issue(7, "session-1", now(), 900).unwrap();
        let claims = keys().verify(&token).unwrap();
        assert_eq!(claims.sub, "7");
        assert_eq!(claims.jti, "session-1");
    }

    #[test]
    fn refuses_forged_expired_early_and_foreign_tokens() {
        let other = TokenKeys::new(
            "k1",
            b"another secret of at least 32 bytes!",
            "flashsale",
            "flashsale-api",
        );
        let forged = other.issue(7, "s", now(), 900).unwrap();
        assert_eq!(keys().verify(&forged), Err(TokenError::Invalid));

        let expired = keys().issue(7, "s", now() - 2000, 900).unwrap();
        assert_eq!(keys().verify(&expired), Err(TokenError::Invalid));

        let early = keys().issue(7, "s", now() + 600, 900).unwrap();
        assert_eq!(keys().verify(&early), Err(TokenError::Invalid));

        let wrong_aud = TokenKeys::new("k1", SECRET, "flashsale", "someone-else")
            .issue(7, "s", now(), 900)
            .unwrap();
        assert_eq!(keys().verify(&wrong_aud), Err(TokenError::Invalid));

        let wrong_kid = TokenKeys::new("k2", SECRET, "flashsale", "flashsale-api")
            .issue(7, "s", now(), 900)
            .unwrap();
        assert_eq!(keys().verify(&wrong_kid), Err(TokenError::UnknownKey));
    }

    #[test]
    fn refuses_alg_none() {
        use std::fmt::Write;
        let token = keys().issue(7, "s", now(), 900).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        // {"alg":"none","typ":"JWT","kid":"k1"} base64url without padding.
        let mut none = String::new();
        write!(
            none,
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiazEifQ.{payload}."
        )
        .unwrap();
        assert_eq!(keys().verify(&none), Err(TokenError::Invalid));
    }
}
