//! Tokens this gateway has already authenticated, so a shopper's next request skips the work.
//!
//! Full authentication of a request ([`crate::auth::AuthUser`]) decodes the JWT's header and
//! claims (base64 and JSON, twice each inside `jsonwebtoken`), computes its HMAC-SHA256, looks up
//! the session and hashes the client's IP and User-Agent to compare them with the session's
//! binding. During a rush that is most of what the gateway does for a request it answers from
//! memory ("sold out"). The result depends only on the exact token bytes, the client they came
//! from and the session's state, so it is remembered here:
//!
//! * key: the whole token string (a forged or altered token is simply a miss and goes through
//!   full verification);
//! * value: who it authenticates, until when, and the exact client IP and User-Agent that passed
//!   the binding check.
//!
//! A hit is only taken when everything full authentication would re-check still holds: the
//! session cache is fresh (the revocation poll is current, see [`crate::auth`]), the session is
//! not revoked, the token and the session have not expired, and the request comes from the same
//! IP and User-Agent. Anything else falls back to full authentication, which decides (and
//! refuses a token replayed from another client). Entries expire with their token, are dropped
//! with the session cache when auth's session store starts a new epoch, and are bounded in number.
//! Signing keys are fixed for the life of the process, so a cached verification cannot outlive
//! the key that made it.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use moka::{sync::Cache, Expiry};

/// Most tokens remembered (about 400 bytes each).
const CAPACITY: u64 = 1_000_000;

/// A token that passed full authentication on this gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// Owner.
    pub user_id: i64,
    /// Whether the owner is an admin.
    pub admin: bool,
    /// Session id.
    pub jti: String,
    /// The earlier of the token's and the session's expiry (Unix ms).
    pub expires_at_ms: i64,
    /// The client IP the token was accepted from.
    pub ip: IpAddr,
    /// The User-Agent the token was accepted from.
    pub user_agent: String,
}

/// Keeps each entry until its token expires.
struct UntilExpiry;

impl Expiry<String, Arc<VerifiedToken>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &String,
        value: &Arc<VerifiedToken>,
        _: Instant,
    ) -> Option<Duration> {
        let left = value.expires_at_ms - flashsale_kernel::now_ms();
        Some(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
    }
}

/// The memo of authenticated tokens.
#[derive(Clone)]
pub struct VerifiedTokens {
    cache: Cache<String, Arc<VerifiedToken>, foldhash::quality::RandomState>,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        Self::new()
    }
}

impl VerifiedTokens {
    /// An empty memo.
    pub fn new() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(CAPACITY)
                .expire_after(UntilExpiry)
                .build_with_hasher(foldhash::quality::RandomState::default()),
        }
    }

    /// The remembered authentication of `token`, if it is still unexpired at `now_ms` and was
    /// made for this client (`binding`: the IP and User-Agent, when sessions are bound).
    /// Revocation and freshness are the caller's to check.
    pub fn get(
        &self,
        token: &str,
        now_ms: i64,
        binding: Option<(IpAddr, &str)>,
    ) -> Option<Arc<VerifiedToken>> {
        let entry = self.cache.get(token)?;
        if now_ms >= entry.expires_at_ms {
            return None;
        }
        if let Some((ip, user_agent)) = binding {
            if entry.ip != ip || entry.user_agent != user_agent {
                return None;
            }
        }
        Some(entry)
    }

    /// Remembers a token that just passed full authentication.
    pub fn insert(&self, token: &str, verified: VerifiedToken) {
        self.cache.insert(token.to_owned(), Arc::new(verified));
    }

    /// Forgets every token (auth's session store started a new epoch).
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(expires_at_ms: i64) -> VerifiedToken {
        VerifiedToken {
            user_id: 7,
            admin: false,
            jti: "j".into(),
            expires_at_ms,
            ip: IpAddr::from([10, 0, 0, 1]),
            user_agent: "ua".into(),
        }
    }

    #[test]
    fn a_hit_needs_the_same_token_client_and_an_unexpired_entry() {
        let memo = VerifiedTokens::new();
        let now = flashsale_kernel::now_ms();
        memo.insert("t1", token(now + 60_000));
        let here = Some((IpAddr::from([10, 0, 0, 1]), "ua"));
        assert_eq!(memo.get("t1", now, here).map(|v| v.user_id), Some(7));
        assert!(memo.get("t2", now, here).is_none(), "another token");
        assert!(memo.get("t1x", now, here).is_none(), "an altered token");
        assert!(
            memo.get("t1", now, Some((IpAddr::from([10, 0, 0, 2]), "ua")))
                .is_none(),
            "another IP"
        );
        assert!(
            memo.get("t1", now, Some((IpAddr::from([10, 0, 0, 1]), "other")))
                .is_none(),
            "another User-Agent"
        );
        assert!(memo.get("t1", now, None).is_some(), "binding off");
        assert!(memo.get("t1", now + 60_000, here).is_none(), "expired");
    }

    #[test]
    fn clear_forgets_everything() {
        let memo = VerifiedTokens::new();
        let now = flashsale_kernel::now_ms();
        memo.insert("t1", token(now + 60_000));
        memo.clear();
        assert!(memo.get("t1", now, None).is_none());
    }
}
