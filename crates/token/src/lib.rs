//! JWT issue and verification (RFC 8725 practices), with signing-key rotation.
//!
//! Tokens are HS256-signed, carry `iss`, `aud`, `sub` (user id), `jti` (session id), `iat`,
//! `nbf` and `exp`, and a `kid` header naming the signing key. Verification accepts exactly one
//! algorithm (HS256) whatever the header says, so `alg: none` and algorithm confusion (`HS512`,
//! `RS256` headers over an HMAC) are refused; `typ` must be `JWT`; `kid` only selects a key,
//! never the algorithm. A token's lifetime (`exp - iat`) may not exceed the configured maximum
//! TTL, so even a holder of a key cannot mint long-lived tokens, and `iat` may not lie in the
//! future. `exp` and `nbf` get [`LEEWAY_SECS`] of leeway for clock skew.
//!
//! # Key rotation
//!
//! [`TokenKeys`] holds one *current* key ([`SigningKey`]), which signs every new token, and any
//! number of *retired* keys ([`RetiredKey`]), which no longer sign but keep verifying the tokens
//! they signed before they were retired, until those tokens have expired. To rotate:
//!
//! 1. Generate a new secret (at least 32 random bytes) under a new, never-reused `kid`.
//! 2. Make it the current key, and move the old current key to the retired list with
//!    `retired_at` = the Unix time of the rollout. Deploy to every service that verifies tokens
//!    (the gateway and the auth service) — verifiers first if the rollout is staggered, so no
//!    verifier sees a `kid` it does not know yet.
//! 3. After the grace period, `retired_at + max_ttl_secs + LEEWAY_SECS`, every token the old key
//!    signed has expired; the key then verifies nothing (it is treated as unknown) and can be
//!    removed from the configuration.
//!
//! A retired key refuses tokens whose `iat` is after its `retired_at`: if an old secret leaks,
//! the tokens minted with it afterwards are worthless, and once it is past its grace (or
//! removed) it opens nothing at all. To revoke a compromised key immediately, remove it instead
//! of retiring it (its users log in again).

use std::collections::HashMap;
use std::sync::Arc;

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
    /// The token names a key this service does not know (or a retired key past its grace).
    #[error("invalid token")]
    UnknownKey,
    /// Signing failed (a key problem on our side, or a TTL above the configured maximum).
    #[error("cannot sign token")]
    Sign,
}

/// Errors building [`TokenKeys`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// A secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("the secret of key {kid:?} is shorter than {MIN_SECRET_LEN} bytes")]
    ShortSecret {
        /// The key id whose secret is too short.
        kid: String,
    },
    /// Two keys (current or retired) share a key id.
    #[error("duplicate key id {kid:?}")]
    DuplicateKid {
        /// The repeated key id.
        kid: String,
    },
    /// A key has an empty key id.
    #[error("empty key id")]
    EmptyKid,
    /// The maximum token TTL is not positive.
    #[error("max token TTL must be positive, got {0} s")]
    InvalidMaxTtl(i64),
}

/// Minimum length of an HS256 secret, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_LEN: usize = 32;

/// Leeway for `exp`/`nbf`, in seconds, to absorb clock skew between machines.
pub const LEEWAY_SECS: u64 = 5;

const LEEWAY: i64 = LEEWAY_SECS as i64;

/// A key that signs new tokens (and verifies them).
#[derive(Clone)]
pub struct SigningKey {
    /// Key id, written in the `kid` header of the tokens it signs.
    pub kid: String,
    /// HMAC secret, at least [`MIN_SECRET_LEN`] bytes.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A key that no longer signs: it verifies tokens it signed before `retired_at` (Unix seconds),
/// until those have expired (`retired_at + max_ttl_secs + LEEWAY_SECS`).
#[derive(Clone)]
pub struct RetiredKey {
    /// Key id, as in the `kid` header of the tokens it signed.
    pub kid: String,
    /// HMAC secret, at least [`MIN_SECRET_LEN`] bytes.
    pub secret: Vec<u8>,
    /// When the key stopped signing (Unix seconds).
    pub retired_at: i64,
}

impl std::fmt::Debug for RetiredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetiredKey")
            .field("kid", &self.kid)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// A key that verifies: the current one (`retired_at: None`) or a retired one.
struct VerifyingKey {
    decoding: DecodingKey,
    retired_at: Option<i64>,
}

struct Inner {
    current_kid: String,
    encoding: EncodingKey,
    keys: HashMap<String, VerifyingKey>,
    validation: Validation,
    issuer: String,
    audience: String,
    max_ttl_secs: i64,
}

/// The signing key, the keys that still verify, and the rules a token must satisfy.
/// Cheap to clone (the keys are shared).
#[derive(Clone)]
pub struct TokenKeys {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut retired: Vec<(&str, i64)> = self
            .inner
            .keys
            .iter()
            .filter_map(|(kid, key)| key.retired_at.map(|at| (kid.as_str(), at)))
            .collect();
        retired.sort_unstable();
        f.debug_struct("TokenKeys")
            .field("kid", &self.inner.current_kid)
            .field("retired", &retired)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("max_ttl_secs", &self.inner.max_ttl_secs)
            .finish_non_exhaustive()
    }
}

fn check_key(kid: &str, secret: &[u8]) -> Result<(), KeyError> {
    if kid.is_empty() {
        return Err(KeyError::EmptyKid);
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(KeyError::ShortSecret {
            kid: kid.to_owned(),
        });
    }
    Ok(())
}

impl TokenKeys {
    /// Keys from the current signing key, the retired keys still in their grace period, the
    /// `iss`/`aud` values, and the longest TTL a token may have (in seconds; also the grace
    /// period of a retired key, plus [`LEEWAY_SECS`]).
    pub fn new(
        current: SigningKey,
        retired: Vec<RetiredKey>,
        issuer: &str,
        audience: &str,
        max_ttl_secs: i64,
    ) -> Result<Self, KeyError> {
        if max_ttl_secs <= 0 {
            return Err(KeyError::InvalidMaxTtl(max_ttl_secs));
        }
        check_key(&current.kid, &current.secret)?;
        let mut keys = HashMap::with_capacity(retired.len() + 1);
        keys.insert(
            current.kid.clone(),
            VerifyingKey {
                decoding: DecodingKey::from_secret(&current.secret),
                retired_at: None,
            },
        );
        for key in retired {
            check_key(&key.kid, &key.secret)?;
            if keys.contains_key(&key.kid) {
                return Err(KeyError::DuplicateKid { kid: key.kid });
            }
            keys.insert(
                key.kid,
                VerifyingKey {
                    decoding: DecodingKey::from_secret(&key.secret),
                    retired_at: Some(key.retired_at),
                },
            );
        }

        // Exactly one algorithm; the time claims are checked by `verify_at` against its clock.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = true;
        validation.leeway = LEEWAY_SECS;

        Ok(Self {
            inner: Arc::new(Inner {
                encoding: EncodingKey::from_secret(&current.secret),
                current_kid: current.kid,
                keys,
                validation,
                issuer: issuer.to_owned(),
                audience: audience.to_owned(),
                max_ttl_secs,
            }),
        })
    }

    /// Signs a token with the current key for `user_id` and session `jti`, valid from `now` for
    /// `ttl_secs`. A TTL that is not positive or above the maximum TTL is refused
    /// ([`TokenError::Sign`]): such a token would not verify.
    pub fn issue(
        &self,
        user_id: i64,
        jti: &str,
        now: i64,
        ttl_secs: i64,
    ) -> Result<String, TokenError> {
        let inner = &*self.inner;
        if ttl_secs <= 0 || ttl_secs > inner.max_ttl_secs {
            return Err(TokenError::Sign);
        }
        let claims = Claims {
            sub: user_id.to_string(),
            jti: jti.to_owned(),
            iss: inner.issuer.clone(),
            aud: inner.audience.clone(),
            iat: now,
            nbf: now,
            exp: now.checked_add(ttl_secs).ok_or(TokenError::Sign)?,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(inner.current_kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &claims, &inner.encoding).map_err(|_| TokenError::Sign)
    }

    /// Verifies a token against the real clock; see [`TokenKeys::verify_at`].
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_at(token, flashsale_kernel::now_ms() / 1000)
    }

    /// Verifies signature, algorithm, `typ`, `kid`, `iss`, `aud`, and, against `now` (Unix
    /// seconds), `nbf`, `exp`, `iat`, the token's lifetime and the key's retirement.
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let inner = &*self.inner;
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::HS256 || header.typ.as_deref() != Some("JWT") {
            return Err(TokenError::Invalid);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| inner.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let grace_end = key.retired_at.map(|retired_at| {
            retired_at
                .saturating_add(inner.max_ttl_secs)
                .saturating_add(LEEWAY)
        });
        if grace_end.is_some_and(|end| now > end) {
            // Every token this key signed has expired: it is as good as unknown.
            return Err(TokenError::UnknownKey);
        }

        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &inner.validation)
            .map_err(|_| TokenError::Invalid)?
            .claims;

        let expired = claims.exp < now.saturating_sub(LEEWAY);
        let early = claims.nbf > now.saturating_add(LEEWAY);
        let issued_in_future = claims.iat > now.saturating_add(LEEWAY);
        let too_long =
            claims.exp.saturating_sub(claims.iat) > inner.max_ttl_secs.saturating_add(LEEWAY);
        let minted_after_retirement = key.retired_at.is_some_and(|at| claims.iat > at);
        if expired || early || issued_in_future || too_long || minted_after_retirement {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// The claims of a token WITHOUT checking anything (signature, key, time, audience).
    /// Only for the gateway's `insecure_skip_auth` benchmark mode, which measures what
    /// verification costs; never base a decision on these claims.
    pub fn read_unverified(token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.insecure_disable_signature_validation();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&[]), &validation)
            .map(|data| data.claims)
            .map_err(|_| TokenError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NEW_SECRET: &[u8] = b"fedcba9876543210fedcba9876543210";
    const OTHER_SECRET: &[u8] = b"another secret of at least 32 bytes!";
    const ISS: &str = "flashsale";
    const AUD: &str = "flashsale-api";
    const MAX_TTL: i64 = 900;
    /// The fake clock: tests pass explicit times to `issue` and `verify_at`.
    const T0: i64 = 1_700_000_000;
    /// When `k1` is retired in the rotation tests.
    const RETIRED_AT: i64 = T0 + 100;

    fn signing(kid: &str, secret: &[u8]) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            secret: secret.to_vec(),
        }
    }

    fn keys_with(kid: &str, secret: &[u8], iss: &str, aud: &str) -> TokenKeys {
        TokenKeys::new(signing(kid, secret), vec![], iss, aud, MAX_TTL).unwrap()
    }

    /// Before rotation: `k1` signs.
    fn keys() -> TokenKeys {
        keys_with("k1", SECRET, ISS, AUD)
    }

    /// After rotation: `k2` signs, `k1` retired at `RETIRED_AT`.
    fn rotated() -> TokenKeys {
        let old = RetiredKey {
            kid: "k1".into(),
            secret: SECRET.to_vec(),
            retired_at: RETIRED_AT,
        };
        TokenKeys::new(signing("k2", NEW_SECRET), vec![old], ISS, AUD, MAX_TTL).unwrap()
    }

    fn claims(iat: i64, nbf: i64, exp: i64) -> Claims {
        Claims {
            sub: "7".into(),
            jti: "s".into(),
            iss: ISS.into(),
            aud: AUD.into(),
            iat,
            nbf,
            exp,
        }
    }

    fn header(alg: Algorithm, kid: Option<&str>, typ: Option<&str>) -> Header {
        let mut header = Header::new(alg);
        header.kid = kid.map(Into::into);
        header.typ = typ.map(Into::into);
        header
    }

    /// A well-formed HS256 header naming `kid`.
    fn header_for(kid: &str) -> Header {
        header(Algorithm::HS256, Some(kid), Some("JWT"))
    }

    /// A token built with `jsonwebtoken::encode`, whatever the header and claims say.
    fn encode(header: &Header, claims: &Claims, secret: &[u8]) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    /// Base64url without padding (RFC 7515 §2), by hand.
    fn b64url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
            let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }

    /// A token from raw header and claims JSON, HMAC-SHA256-signed with `secret` whatever the
    /// header says.
    fn hand_built(header_json: &str, claims_json: &str, secret: &[u8]) -> String {
        let message = format!(
            "{}.{}",
            b64url(header_json.as_bytes()),
            b64url(claims_json.as_bytes())
        );
        let signature = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(secret),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{message}.{signature}")
    }

    fn claims_json(iat: i64, nbf: i64, exp: i64) -> String {
        format!(
            r#"{{"sub":"7","jti":"s","iss":"{ISS}","aud":"{AUD}","iat":{iat},"nbf":{nbf},"exp":{exp}}}"#
        )
    }

    #[test]
    fn b64url_matches_rfc_4648_vectors() {
        assert_eq!(b64url(b""), "");
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(b"foob"), "Zm9vYg");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(
            b64url(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiazEifQ"
        );
    }

    #[test]
    fn issued_token_verifies() {
        let token = keys().issue(7, "session-1", T0, 900).unwrap();
        let claims = keys().verify_at(&token, T0 + 10).unwrap();
        assert_eq!(claims.sub, "7");
        assert_eq!(claims.jti, "session-1");
        assert_eq!((claims.iat, claims.nbf, claims.exp), (T0, T0, T0 + 900));
        assert_eq!((claims.iss.as_str(), claims.aud.as_str()), (ISS, AUD));

        // `verify` uses the real clock.
        let now = flashsale_kernel::now_ms() / 1000;
        let token = keys().issue(7, "session-1", now, 900).unwrap();
        assert_eq!(keys().verify(&token).unwrap().jti, "session-1");
    }

    #[test]
    fn hand_built_token_with_good_claims_verifies() {
        // The hand-built tokens below differ from this one only in what they test.
        let token = hand_built(
            r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#,
            &claims_json(T0, T0, T0 + 900),
            SECRET,
        );
        assert_eq!(keys().verify_at(&token, T0), Ok(claims(T0, T0, T0 + 900)));
    }

    #[test]
    fn refuses_forged_signature() {
        let forged = keys_with("k1", OTHER_SECRET, ISS, AUD)
            .issue(7, "s", T0, 900)
            .unwrap();
        assert_eq!(keys().verify_at(&forged, T0), Err(TokenError::Invalid));
    }

    #[test]
    fn refuses_tampered_payload() {
        let token = keys().issue(7, "s", T0, 900).unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let other = b64url(
            claims_json(T0, T0, T0 + 900)
                .replace("\"7\"", "\"1\"")
                .as_bytes(),
        );
        parts[1] = &other;
        assert_eq!(
            keys().verify_at(&parts.join("."), T0),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn refuses_alg_none() {
        let header = r#"{"alg":"none","typ":"JWT","kid":"k1"}"#;
        let payload = b64url(claims_json(T0, T0, T0 + 900).as_bytes());
        let unsigned = format!("{}.{payload}.", b64url(header.as_bytes()));
        assert_eq!(keys().verify_at(&unsigned, T0), Err(TokenError::Invalid));
        // Nor with a (valid HMAC) signature attached.
        let signed = hand_built(header, &claims_json(T0, T0, T0 + 900), SECRET);
        assert_eq!(keys().verify_at(&signed, T0), Err(TokenError::Invalid));
        // Nor `None` spelled otherwise.
        let upper = hand_built(
            r#"{"alg":"None","typ":"JWT","kid":"k1"}"#,
            &claims_json(T0, T0, T0 + 900),
            SECRET,
        );
        assert_eq!(keys().verify_at(&upper, T0), Err(TokenError::Invalid));
    }

    #[test]
    fn refuses_hs512_header_signed_with_same_secret() {
        let token = encode(
            &header(Algorithm::HS512, Some("k1"), Some("JWT")),
            &claims(T0, T0, T0 + 900),
            SECRET,
        );
        assert_eq!(keys().verify_at(&token, T0), Err(TokenError::Invalid));
    }

    #[test]
    fn refuses_rs256_header_signed_with_hmac() {
        // Algorithm confusion: an RS256 header over an HMAC of the shared secret.
        let token = hand_built(
            r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#,
            &claims_json(T0, T0, T0 + 900),
            SECRET,
        );
        assert_eq!(keys().verify_at(&token, T0), Err(TokenError::Invalid));
    }

    #[test]
    fn expiry_has_leeway_and_no_more() {
        let token = keys().issue(7, "s", T0, 900).unwrap();
        let exp = T0 + 900;
        assert!(keys().verify_at(&token, exp).is_ok());
        assert!(keys().verify_at(&token, exp + LEEWAY).is_ok());
        assert_eq!(
            keys().verify_at(&token, exp + LEEWAY + 1),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            keys().verify_at(&token, exp + 3600),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn refuses_nbf_in_the_future() {
        let hdr = header(Algorithm::HS256, Some("k1"), Some("JWT"));
        let early = encode(&hdr, &claims(T0, T0 + 60, T0 + 900), SECRET);
        assert_eq!(keys().verify_at(&early, T0), Err(TokenError::Invalid));
        assert!(keys().verify_at(&early, T0 + 60).is_ok());

        let within_leeway = encode(&hdr, &claims(T0, T0 + LEEWAY, T0 + 900), SECRET);
        assert!(keys().verify_at(&within_leeway, T0).is_ok());
        let beyond_leeway = encode(&hdr, &claims(T0, T0 + LEEWAY + 1, T0 + 900), SECRET);
        assert_eq!(
            keys().verify_at(&beyond_leeway, T0),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn refuses_iat_in_the_future() {
        let hdr = header(Algorithm::HS256, Some("k1"), Some("JWT"));
        // A short lifetime that starts far ahead, valid "now" through nbf: a long-lived token.
        let token = encode(&hdr, &claims(T0 + 100_000, T0, T0 + 100_000 + 900), SECRET);
        assert_eq!(keys().verify_at(&token, T0), Err(TokenError::Invalid));
    }

    #[test]
    fn refuses_wrong_audience() {
        let token = keys_with("k1", SECRET, ISS, "someone-else")
            .issue(7, "s", T0, 900)
            .unwrap();
        assert_eq!(keys().verify_at(&token, T0), Err(TokenError::Invalid));
    }

    #[test]
    fn refuses_wrong_issuer() {
        let token = keys_with("k1", SECRET, "evil", AUD)
            .issue(7, "s", T0, 900)
            .unwrap();
        assert_eq!(keys().verify_at(&token, T0), Err(TokenError::Invalid));
    }

    #[test]
    fn refuses_wrong_or_missing_typ() {
        for typ in [Some("at+jwt"), Some("jwt"), Some(""), None] {
            let token = encode(
                &header(Algorithm::HS256, Some("k1"), typ),
                &claims(T0, T0, T0 + 900),
                SECRET,
            );
            assert_eq!(
                keys().verify_at(&token, T0),
                Err(TokenError::Invalid),
                "typ {typ:?}"
            );
        }
    }

    #[test]
    fn refuses_missing_claims() {
        let full = claims_json(T0, T0, T0 + 900);
        for claim in ["sub", "jti", "iss", "aud", "iat", "nbf", "exp"] {
            let fields: Vec<&str> = full
                .trim_matches(['{', '}'])
                .split(',')
                .filter(|field| !field.starts_with(&format!("\"{claim}\"")))
                .collect();
            assert_eq!(fields.len(), 6, "{claim}");
            let json = format!("{{{}}}", fields.join(","));
            let token = hand_built(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#, &json, SECRET);
            assert_eq!(
                keys().verify_at(&token, T0),
                Err(TokenError::Invalid),
                "without {claim}"
            );
        }
    }

    #[test]
    fn unknown_or_missing_kid_is_unknown_key() {
        let k2 = keys_with("k2", SECRET, ISS, AUD)
            .issue(7, "s", T0, 900)
            .unwrap();
        assert_eq!(keys().verify_at(&k2, T0), Err(TokenError::UnknownKey));

        let no_kid = encode(
            &header(Algorithm::HS256, None, Some("JWT")),
            &claims(T0, T0, T0 + 900),
            SECRET,
        );
        assert_eq!(keys().verify_at(&no_kid, T0), Err(TokenError::UnknownKey));
    }

    #[test]
    fn rotation_old_token_verifies_within_grace() {
        let old = keys().issue(7, "s", T0, 900).unwrap();
        let claims = rotated().verify_at(&old, RETIRED_AT + 10).unwrap();
        assert_eq!(claims.exp, T0 + 900);
        // Still good up to its own expiry (plus leeway), which is within the grace.
        assert!(rotated().verify_at(&old, T0 + 900 + LEEWAY).is_ok());
        assert_eq!(
            rotated().verify_at(&old, T0 + 900 + LEEWAY + 1),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn rotation_retired_key_refused_after_grace() {
        // Signed at the very moment of retirement: the last token the old key may vouch for.
        let last = keys().issue(7, "s", RETIRED_AT, 900).unwrap();
        let grace_end = RETIRED_AT + MAX_TTL + LEEWAY;
        assert!(rotated().verify_at(&last, grace_end).is_ok());
        assert_eq!(
            rotated().verify_at(&last, grace_end + 1),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(
            rotated().verify_at(&last, grace_end + 86_400),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn rotation_refuses_token_minted_with_retired_key_after_retirement() {
        // E.g. the old secret leaked: whoever holds it signs fresh tokens.
        let leaked = keys().issue(7, "s", RETIRED_AT + 1, 900).unwrap();
        assert_eq!(
            rotated().verify_at(&leaked, RETIRED_AT + 2),
            Err(TokenError::Invalid)
        );
        // Backdating `iat` does not help past the token's lifetime cap.
        let hdr = header(Algorithm::HS256, Some("k1"), Some("JWT"));
        let backdated = encode(&hdr, &claims(RETIRED_AT, T0 + 500, T0 + 5000), SECRET);
        assert_eq!(
            rotated().verify_at(&backdated, T0 + 600),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn rotation_new_tokens_carry_new_kid() {
        let token = rotated().issue(7, "s", RETIRED_AT + 1, 900).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("k2"));
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert!(rotated().verify_at(&token, RETIRED_AT + 2).is_ok());
        // A verifier that has not been given the new key yet does not know it.
        assert_eq!(
            keys().verify_at(&token, RETIRED_AT + 2),
            Err(TokenError::UnknownKey)
        );
        // The new key's secret does not verify under the old kid, nor the reverse.
        let swapped = encode(
            &header_for("k1"),
            &claims(RETIRED_AT, RETIRED_AT, RETIRED_AT + 900),
            NEW_SECRET,
        );
        assert_eq!(
            rotated().verify_at(&swapped, RETIRED_AT),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn refuses_lifetime_beyond_max_ttl() {
        let at_max = encode(
            &header_for("k1"),
            &claims(T0, T0, T0 + MAX_TTL + LEEWAY),
            SECRET,
        );
        assert!(keys().verify_at(&at_max, T0).is_ok());
        let too_long = encode(
            &header_for("k1"),
            &claims(T0, T0, T0 + MAX_TTL + LEEWAY + 1),
            SECRET,
        );
        assert_eq!(keys().verify_at(&too_long, T0), Err(TokenError::Invalid));
        let year = encode(
            &header_for("k1"),
            &claims(T0, T0, T0 + 365 * 86_400),
            SECRET,
        );
        assert_eq!(keys().verify_at(&year, T0), Err(TokenError::Invalid));
        // Nor do we issue one.
        assert_eq!(keys().issue(7, "s", T0, MAX_TTL + 1), Err(TokenError::Sign));
        assert_eq!(keys().issue(7, "s", T0, 0), Err(TokenError::Sign));
    }

    #[test]
    fn extreme_claims_do_not_overflow() {
        let hdr = header_for("k1");
        let low = encode(&hdr, &claims(i64::MIN, 0, T0 + 10), SECRET);
        assert_eq!(keys().verify_at(&low, T0), Err(TokenError::Invalid));
        let high = encode(&hdr, &claims(T0, T0, i64::MAX), SECRET);
        assert_eq!(keys().verify_at(&high, T0), Err(TokenError::Invalid));
        let token = keys().issue(7, "s", T0, 900).unwrap();
        assert_eq!(keys().verify_at(&token, i64::MIN), Err(TokenError::Invalid));
        assert_eq!(
            rotated().verify_at(&token, i64::MAX),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn new_rejects_short_secrets() {
        let short = b"0123456789abcdef0123456789abcde"; // 31 bytes
        assert_eq!(
            TokenKeys::new(signing("k1", short), vec![], ISS, AUD, MAX_TTL).unwrap_err(),
            KeyError::ShortSecret { kid: "k1".into() }
        );
        let retired = RetiredKey {
            kid: "old".into(),
            secret: short.to_vec(),
            retired_at: T0,
        };
        assert_eq!(
            TokenKeys::new(signing("k1", SECRET), vec![retired], ISS, AUD, MAX_TTL).unwrap_err(),
            KeyError::ShortSecret { kid: "old".into() }
        );
    }

    #[test]
    fn new_rejects_duplicate_and_empty_kids() {
        let retired = |kid: &str| RetiredKey {
            kid: kid.into(),
            secret: SECRET.to_vec(),
            retired_at: T0,
        };
        assert_eq!(
            TokenKeys::new(
                signing("k1", NEW_SECRET),
                vec![retired("k1")],
                ISS,
                AUD,
                MAX_TTL
            )
            .unwrap_err(),
            KeyError::DuplicateKid { kid: "k1".into() }
        );
        assert_eq!(
            TokenKeys::new(
                signing("k3", NEW_SECRET),
                vec![retired("k1"), retired("k1")],
                ISS,
                AUD,
                MAX_TTL
            )
            .unwrap_err(),
            KeyError::DuplicateKid { kid: "k1".into() }
        );
        assert_eq!(
            TokenKeys::new(signing("", SECRET), vec![], ISS, AUD, MAX_TTL).unwrap_err(),
            KeyError::EmptyKid
        );
        assert_eq!(
            TokenKeys::new(signing("k1", SECRET), vec![retired("")], ISS, AUD, MAX_TTL)
                .unwrap_err(),
            KeyError::EmptyKid
        );
        assert_eq!(
            TokenKeys::new(signing("k1", SECRET), vec![], ISS, AUD, 0).unwrap_err(),
            KeyError::InvalidMaxTtl(0)
        );
    }

    #[test]
    fn debug_shows_no_secret_and_clones_share_keys() {
        let keys = rotated();
        let debug = format!("{keys:?} {:?}", signing("k9", SECRET));
        assert!(debug.contains("k2") && debug.contains("k1") && debug.contains("k9"));
        for secret in [SECRET, NEW_SECRET] {
            let secret = std::str::from_utf8(secret).unwrap();
            assert!(!debug.contains(secret), "{debug}");
            assert!(!debug.contains(&secret[..8]), "{debug}");
        }
        let clone = keys.clone();
        assert!(Arc::ptr_eq(&keys.inner, &clone.inner));
    }

    #[test]
    fn read_unverified_reads_any_token_and_is_named_for_it() {
        let forged = TokenKeys::new(
            SigningKey {
                kid: "k1".into(),
                secret: b"some other secret of 32 bytes or more".to_vec(),
            },
            Vec::new(),
            "flashsale",
            "flashsale-api",
            900,
        )
        .unwrap()
        .issue(7, "s", 1_000, 900)
        .unwrap();
        assert_eq!(TokenKeys::read_unverified(&forged).unwrap().sub, "7");
        assert_eq!(
            TokenKeys::read_unverified("not a token"),
            Err(TokenError::Invalid)
        );
    }
}
