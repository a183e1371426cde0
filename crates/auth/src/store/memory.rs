//! [`MemorySessionStore`]: sessions in process memory, for a single auth instance.
//!
//! Each session is evicted at its own expiry (a `moka` cache with a per-entry expiry). Revoking
//! a live session appends it to an in-memory revocation log at the next position; an entry is
//! kept until the revoked session would have expired anyway. The epoch is the moment the store
//! was built, so a restarted auth process reports a new epoch and gateways drop their caches.
//!
//! Whether a session is live is decided by the store's [`flashsale_kernel::Clock`] (the system's by default; tests
//! move a [`flashsale_kernel::ManualClock`]); the cache evicts by the system's time, which only
//! frees memory.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use flashsale_kernel::{SharedClock, SystemClock};
use moka::{sync::Cache, Expiry};
use parking_lot::Mutex;

use super::{Revocations, Session, SessionStore, StoreError};

/// Sessions in process memory, each evicted at its own expiry, and the log of revocations
/// (kept until the revoked session would have expired anyway).
#[derive(Clone)]
pub struct MemorySessionStore {
    sessions: Cache<String, Session>,
    log: Arc<Mutex<RevocationLog>>,
    epoch_ms: i64,
    clock: SharedClock,
}

#[derive(Debug, Default)]
struct RevocationLog {
    /// (position, jti, session expiry in Unix ms), oldest first.
    entries: VecDeque<(u64, String, i64)>,
    last: u64,
}

impl std::fmt::Debug for MemorySessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemorySessionStore")
            .field("sessions", &self.sessions.entry_count())
            .finish()
    }
}

struct UntilExpiry(SharedClock);

impl Expiry<String, Session> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Session,
        _now: Instant,
    ) -> Option<Duration> {
        let left = value.expires_at_ms - self.0.now_ms();
        Some(Duration::from_millis(u64::try_from(left).unwrap_or(0)))
    }
}

impl MemorySessionStore {
    /// An empty store holding at most `capacity` sessions, on the system's clock.
    pub fn new(capacity: u64) -> Self {
        Self::with_clock(capacity, SystemClock::shared())
    }

    /// An empty store holding at most `capacity` sessions, on `clock`.
    pub fn with_clock(capacity: u64, clock: SharedClock) -> Self {
        Self {
            sessions: Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilExpiry(Arc::clone(&clock)))
                .build(),
            log: Arc::new(Mutex::new(RevocationLog::default())),
            epoch_ms: clock.now_ms(),
            clock,
        }
    }
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        Self::new(10_000_000)
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn put(&self, session: Session) -> Result<(), StoreError> {
        self.sessions.insert(session.jti.clone(), session);
        Ok(())
    }

    async fn get(&self, jti: &str) -> Result<Option<Session>, StoreError> {
        Ok(self
            .sessions
            .get(jti)
            .filter(|s| s.expires_at_ms > self.clock.now_ms()))
    }

    async fn revoke(&self, jti: &str) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        // An expired session the cache has not evicted yet is as gone as an unknown one (and
        // as in Redis, where the key has expired): nothing to revoke, nothing to log.
        let Some(session) = self.sessions.remove(jti).filter(|s| s.expires_at_ms > now) else {
            return Ok(false);
        };
        let mut log = self.log.lock();
        log.last += 1;
        let position = log.last;
        log.entries
            .push_back((position, session.jti, session.expires_at_ms));
        // Revocations of sessions that have expired anyway are no longer news.
        while log
            .entries
            .front()
            .is_some_and(|(_, _, expires)| *expires < now)
        {
            log.entries.pop_front();
        }
        Ok(true)
    }

    async fn revocations(&self, after: u64) -> Result<Revocations, StoreError> {
        let log = self.log.lock();
        Ok(Revocations {
            jtis: log
                .entries
                .iter()
                .filter(|(position, _, _)| *position > after)
                .map(|(_, jti, _)| jti.clone())
                .collect(),
            last: log.last,
            epoch_ms: self.epoch_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{super::Role, *};

    fn session(jti: &str) -> Session {
        Session {
            jti: jti.into(),
            user_id: 1,
            role: Role::Customer,
            ip_hash: vec![1],
            user_agent_hash: vec![2],
            expires_at_ms: flashsale_storage::now_ms() + 60_000,
        }
    }

    #[tokio::test]
    async fn revocations_are_logged_in_order_once() {
        let store = MemorySessionStore::new(100);
        for jti in ["a", "b", "c"] {
            store.put(session(jti)).await.unwrap();
        }
        let empty = store.revocations(0).await.unwrap();
        assert_eq!((empty.jtis.len(), empty.last), (0, 0));
        assert!(store.revoke("b").await.unwrap());
        assert!(!store.revoke("b").await.unwrap(), "revoked twice");
        assert!(!store.revoke("unknown").await.unwrap());
        assert!(store.revoke("a").await.unwrap());
        let all = store.revocations(0).await.unwrap();
        assert_eq!(all.jtis, vec!["b".to_owned(), "a".to_owned()]);
        assert_eq!(all.last, 2);
        let newer = store.revocations(1).await.unwrap();
        assert_eq!(newer.jtis, vec!["a".to_owned()]);
        assert_eq!(store.get("a").await.unwrap(), None);
        assert!(store.get("c").await.unwrap().is_some());
        assert_eq!(all.epoch_ms, newer.epoch_ms);
    }
}
