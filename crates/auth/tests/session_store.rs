//! The `SessionStore` conformance suite: one set of cases, run against every backend.
//!
//! Each case below is an async function generic over the store; [`conformance!`] turns it into
//! a `memory::<case>` test (always runs) and a `redis::<case>` test (against the local Redis
//! under a key prefix of its own, skipped with a message when there is none unless `CI=true`).
//! The Redis-only cases at the end cover what only a shared store has: a data set lost under
//! the service (new epoch) and several auth instances on one Redis.
//!
//! Time: the memory store runs on a [`ManualClock`] the cases move forward, so expiry is
//! checked without waiting; Redis expires keys on its own clock, so there the cases really wait
//! (polling a condition until a deadline, never a fixed sleep).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashSet, future::Future, time::Duration};

use flashsale_auth::store::{
    MemorySessionStore, RedisSessionStore, Revocations, Role, Session, SessionStore,
};
use flashsale_redis::{testing::TestRedis, Redis};
use flashsale_storage::now_ms;
use flashsale_testkit::{eventually, ManualClock};

/// The time a case sees: the memory store's manual clock, or the wall clock Redis keeps.
#[derive(Clone)]
enum Time {
    /// Moved by hand (the memory store's clock).
    Manual(ManualClock),
    /// The wall clock (Redis's keys expire by it).
    Real,
}

impl Time {
    fn now_ms(&self) -> i64 {
        match self {
            Self::Manual(clock) => flashsale_kernel::Clock::now_ms(clock),
            Self::Real => now_ms(),
        }
    }

    /// Lets the time pass `ms` (Unix ms): at once on a manual clock, else waits for it.
    async fn pass(&self, ms: i64) {
        match self {
            Self::Manual(clock) => {
                let left = ms - flashsale_kernel::Clock::now_ms(clock);
                clock.advance(Duration::from_millis(
                    u64::try_from(left.max(0)).unwrap_or(0),
                ));
            }
            Self::Real => wait_until_past(ms).await,
        }
    }
}

/// A live session expiring in a minute.
fn session(jti: &str) -> Session {
    session_until(jti, now_ms() + 60_000)
}

fn session_until(jti: &str, expires_at_ms: i64) -> Session {
    Session {
        jti: jti.into(),
        user_id: 42,
        role: Role::Customer,
        ip_hash: vec![1, 2, 3],
        user_agent_hash: vec![4, 5, 6],
        expires_at_ms,
    }
}

/// Waits until the wall clock is past `ms`.
async fn wait_until_past(ms: i64) {
    eventually("the clock", Duration::from_secs(10), || async move {
        now_ms() > ms
    })
    .await;
}

/// Checks that `all` (the whole log, oldest first) sits at positions 1..=len.
async fn assert_positions<S: SessionStore>(store: &S, all: &[String]) {
    let len = all.len() as u64;
    for after in 0..=len {
        let page = store.revocations(after).await.unwrap();
        let skip = usize::try_from(after).unwrap();
        assert_eq!(page.jtis, all[skip..], "revocations after {after}");
        assert_eq!(page.last, len, "last after {after}");
    }
}

// ---------------------------------------------------------------------------------------------
// The cases, shared by every backend.
// ---------------------------------------------------------------------------------------------

async fn put_get_round_trips_every_field<S: SessionStore + Clone>(store: S, _time: Time) {
    let customer = session("round-trip-customer");
    let admin = Session {
        jti: "round-trip-admin".into(),
        user_id: i64::MAX,
        role: Role::Admin,
        ip_hash: (0..=255).collect(), // every byte value, including NUL and invalid UTF-8
        user_agent_hash: Vec::new(),
        expires_at_ms: now_ms() + 3_600_000,
    };
    store.put(customer.clone()).await.unwrap();
    store.put(admin.clone()).await.unwrap();
    assert_eq!(store.get(&customer.jti).await.unwrap(), Some(customer));
    assert_eq!(store.get(&admin.jti).await.unwrap(), Some(admin.clone()));

    // A second put of the same jti replaces the session.
    let replaced = Session {
        user_id: 7,
        role: Role::Customer,
        ..admin
    };
    store.put(replaced.clone()).await.unwrap();
    assert_eq!(store.get(&replaced.jti).await.unwrap(), Some(replaced));
}

async fn unknown_session_is_none<S: SessionStore + Clone>(store: S, _time: Time) {
    assert_eq!(store.get("no-such-session").await.unwrap(), None);
    store.put(session("known")).await.unwrap();
    assert_eq!(store.get("no-such-session").await.unwrap(), None);
    assert_eq!(store.get("").await.unwrap(), None);
}

async fn already_expired_session_is_absent<S: SessionStore + Clone>(store: S, time: Time) {
    store
        .put(session_until("expired", time.now_ms() - 1_000))
        .await
        .unwrap();
    assert_eq!(store.get("expired").await.unwrap(), None);
    assert!(
        !store.revoke("expired").await.unwrap(),
        "an expired session cannot be revoked"
    );
    let log = store.revocations(0).await.unwrap();
    assert_eq!((log.jtis.len(), log.last), (0, 0), "nothing was logged");
}

async fn session_expires_at_its_expiry<S: SessionStore + Clone>(store: S, time: Time) {
    // 5 s: on Redis the put and the first get below must both land before it, on a loaded
    // machine too (on the manual clock nothing moves until the case says so).
    let expires_at_ms = time.now_ms() + 5_000;
    store
        .put(session_until("short", expires_at_ms))
        .await
        .unwrap();
    assert!(store.get("short").await.unwrap().is_some(), "live at first");
    if let Time::Manual(clock) = &time {
        // To the millisecond: live 1 ms before its expiry, gone at it.
        time.pass(expires_at_ms - 1).await;
        assert!(store.get("short").await.unwrap().is_some(), "expired early");
        clock.advance(Duration::from_millis(1));
        assert!(
            store.get("short").await.unwrap().is_none(),
            "still live at its expiry"
        );
    }
    eventually("the session to expire", Duration::from_secs(15), || {
        let (store, time) = (store.clone(), time.clone());
        async move {
            let gone = store.get("short").await.unwrap().is_none();
            // Gone no earlier than its expiry (a few ms of timer granularity allowed).
            assert!(
                !gone || time.now_ms() >= expires_at_ms - 20,
                "expired {} ms early",
                expires_at_ms - time.now_ms()
            );
            gone
        }
    })
    .await;
    assert!(!store.revoke("short").await.unwrap());
    assert_eq!(store.revocations(0).await.unwrap().last, 0);
}

async fn revoke_is_true_once<S: SessionStore + Clone>(store: S, _time: Time) {
    store.put(session("once")).await.unwrap();
    store.put(session("other")).await.unwrap();
    assert!(store.revoke("once").await.unwrap());
    assert!(!store.revoke("once").await.unwrap(), "revoked twice");
    assert!(!store.revoke("unknown").await.unwrap());
    assert_eq!(store.get("once").await.unwrap(), None);
    assert!(
        store.get("other").await.unwrap().is_some(),
        "others untouched"
    );
    let log = store.revocations(0).await.unwrap();
    assert_eq!(log.jtis, ["once"]);
    assert_eq!(log.last, 1);
}

async fn revocations_are_logged_in_order<S: SessionStore + Clone>(store: S, _time: Time) {
    let empty = store.revocations(0).await.unwrap();
    assert_eq!((empty.jtis.len(), empty.last), (0, 0));
    assert!(
        (now_ms() - 60_000..=now_ms()).contains(&empty.epoch_ms),
        "epoch {} is not a recent Unix ms",
        empty.epoch_ms
    );
    for jti in ["a", "b", "c", "d"] {
        store.put(session(jti)).await.unwrap();
    }
    for jti in ["c", "a", "d"] {
        assert!(store.revoke(jti).await.unwrap());
    }
    let all: Vec<String> = ["c", "a", "d"].map(String::from).to_vec();
    assert_positions(&store, &all).await;
    assert_eq!(
        store.revocations(10).await.unwrap(),
        Revocations {
            jtis: Vec::new(),
            last: 3,
            epoch_ms: empty.epoch_ms
        },
        "nothing after the end; epoch stable across calls, puts and revokes"
    );
    assert!(store.get("b").await.unwrap().is_some());
}

async fn expired_revocations_leave_the_log<S: SessionStore + Clone>(store: S, time: Time) {
    // 3 s: two puts, a revoke and a read of the log must all land before it, on a loaded
    // machine too (a revoke after the expiry finds nothing to revoke).
    let short_expiry = time.now_ms() + 3_000;
    store
        .put(session_until("short", short_expiry))
        .await
        .unwrap();
    store.put(session("long")).await.unwrap();
    assert!(store.revoke("short").await.unwrap());
    assert_eq!(store.revocations(0).await.unwrap().jtis, ["short"]);
    time.pass(short_expiry + 1).await;
    // The next revocation trims the ones whose sessions have expired anyway.
    assert!(store.revoke("long").await.unwrap());
    let log = store.revocations(0).await.unwrap();
    assert_eq!(log.jtis, ["long"]);
    assert_eq!(log.last, 2, "positions are never reused");
}

async fn concurrent_revokes_log_each_session_once<S: SessionStore + Clone>(store: S, _time: Time) {
    let jtis: Vec<String> = (0..100).map(|i| format!("concurrent-{i}")).collect();
    for jti in &jtis {
        store.put(session(jti)).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for jti in jtis.iter().chain(&jtis) {
        let (store, jti) = (store.clone(), jti.clone());
        tasks.spawn(async move { store.revoke(&jti).await.unwrap() });
    }
    let mut revoked = 0;
    while let Some(result) = tasks.join_next().await {
        revoked += usize::from(result.unwrap());
    }
    assert_eq!(revoked, 100, "exactly one revoke per session wins");
    let log = store.revocations(0).await.unwrap();
    assert_eq!(log.last, 100);
    assert_eq!(log.jtis.len(), 100);
    let distinct: HashSet<&String> = log.jtis.iter().collect();
    assert_eq!(distinct, jtis.iter().collect(), "each session exactly once");
    assert_positions(&store, &log.jtis).await;
}

// ---------------------------------------------------------------------------------------------
// One test per case and backend.
// ---------------------------------------------------------------------------------------------

/// Runs `case` on a store over a fresh Redis prefix, then deletes the prefix's keys (also when
/// the case fails, whose panic is then passed on).
async fn on_redis<F, Fut>(case: F)
where
    F: FnOnce(RedisSessionStore, Time) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(test) = TestRedis::start().await else {
        return;
    };
    let outcome = tokio::spawn(case(RedisSessionStore::new(test.redis.clone()), Time::Real)).await;
    test.cleanup().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let clock = super::ManualClock::starting_now();
                    let store = flashsale_auth::store::MemorySessionStore::with_clock(10_000, clock.shared());
                    super::$case(store, super::Time::Manual(clock)).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::on_redis(super::$case).await;
                }
            )*
        }
    };
}

conformance!(
    put_get_round_trips_every_field,
    unknown_session_is_none,
    already_expired_session_is_absent,
    session_expires_at_its_expiry,
    revoke_is_true_once,
    revocations_are_logged_in_order,
    expired_revocations_leave_the_log,
    concurrent_revokes_log_each_session_once,
);

// ---------------------------------------------------------------------------------------------
// Redis only.
// ---------------------------------------------------------------------------------------------

/// Deletes every key of the test's prefix: what FLUSHALL, or a restart of a Redis without
/// persistence, does to this data set (without touching other tests' keys).
async fn lose_data_set(test: &TestRedis) {
    test.cleanup().await;
}

#[tokio::test]
async fn redis_lost_data_set_starts_a_new_epoch() {
    let Some(test) = TestRedis::start().await else {
        return;
    };
    let store = RedisSessionStore::new(test.redis.clone());
    store.put(session("old")).await.unwrap();
    store.put(session("revoked")).await.unwrap();
    assert!(store.revoke("revoked").await.unwrap());
    let before = store.revocations(0).await.unwrap();
    assert_eq!((before.jtis.len(), before.last), (1, 1));
    assert_eq!(
        store.revocations(1).await.unwrap().epoch_ms,
        before.epoch_ms
    );

    // Epochs are Unix ms: let the clock move on so the new one can differ.
    wait_until_past(before.epoch_ms).await;
    lose_data_set(&test).await;

    let after = store.revocations(0).await.unwrap();
    assert_ne!(
        after.epoch_ms, before.epoch_ms,
        "a new data set, a new epoch"
    );
    assert!(after.epoch_ms > before.epoch_ms);
    assert_eq!((after.jtis.len(), after.last), (0, 0), "the log restarts");
    assert_eq!(store.get("old").await.unwrap(), None, "sessions are gone");
    assert!(!store.revoke("old").await.unwrap());
    // The new epoch then stays put.
    store.put(session("new")).await.unwrap();
    assert!(store.revoke("new").await.unwrap());
    let later = store.revocations(0).await.unwrap();
    assert_eq!((later.jtis, later.last), (vec!["new".to_owned()], 1));
    assert_eq!(later.epoch_ms, after.epoch_ms);
    test.cleanup().await;
}

#[tokio::test]
async fn redis_put_after_lost_data_set_starts_the_new_epoch() {
    let Some(test) = TestRedis::start().await else {
        return;
    };
    let store = RedisSessionStore::new(test.redis.clone());
    let before = store.revocations(0).await.unwrap();
    wait_until_past(before.epoch_ms).await;
    lose_data_set(&test).await;
    // A login after the loss creates the new epoch; polls then report that same epoch.
    store.put(session("fresh")).await.unwrap();
    let mut conn = test.redis.conn();
    let stored: Option<i64> = ::redis::cmd("GET")
        .arg(test.redis.key("epoch"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let after = store.revocations(0).await.unwrap();
    assert_eq!(stored, Some(after.epoch_ms));
    assert_ne!(after.epoch_ms, before.epoch_ms);
    test.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_instances_on_one_prefix_share_sessions_and_revocations() {
    let Some(test) = TestRedis::start().await else {
        return;
    };
    // Two auth instances: separate connections, same server and prefix.
    let one = RedisSessionStore::new(test.redis.clone());
    let two = RedisSessionStore::new(Redis::connect(&test.config).await.unwrap());

    let s = session("shared");
    one.put(s.clone()).await.unwrap();
    assert_eq!(two.get("shared").await.unwrap(), Some(s));
    two.put(session("second")).await.unwrap();
    assert!(one.get("second").await.unwrap().is_some());

    assert!(
        two.revoke("shared").await.unwrap(),
        "logout through instance two"
    );
    assert!(
        !one.revoke("shared").await.unwrap(),
        "already revoked by two"
    );
    assert_eq!(one.get("shared").await.unwrap(), None);
    assert!(one.revoke("second").await.unwrap());

    let seen_by_one = one.revocations(0).await.unwrap();
    let seen_by_two = two.revocations(0).await.unwrap();
    assert_eq!(seen_by_one, seen_by_two, "one log, one sequence, one epoch");
    assert_eq!(seen_by_one.jtis, ["shared", "second"]);
    assert_eq!(seen_by_one.last, 2);

    // Concurrent revokes through both instances still hand out each position once.
    let jtis: Vec<String> = (0..50).map(|i| format!("both-{i}")).collect();
    for jti in &jtis {
        one.put(session(jti)).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for jti in &jtis {
        for store in [one.clone(), two.clone()] {
            let jti = jti.clone();
            tasks.spawn(async move { store.revoke(&jti).await.unwrap() });
        }
    }
    let mut revoked = 0;
    while let Some(result) = tasks.join_next().await {
        revoked += usize::from(result.unwrap());
    }
    assert_eq!(revoked, 50);
    let page = two.revocations(2).await.unwrap();
    assert_eq!(page.last, 52);
    assert_eq!(
        page.jtis.iter().collect::<HashSet<_>>(),
        jtis.iter().collect()
    );
    test.cleanup().await;
}

#[tokio::test]
async fn redis_revocation_pages_are_capped() {
    let Some(test) = TestRedis::start().await else {
        return;
    };
    let store = RedisSessionStore::new(test.redis.clone()).with_page_limit(3);
    let jtis: Vec<String> = (0..7).map(|i| format!("paged-{i}")).collect();
    for jti in &jtis {
        store.put(session(jti)).await.unwrap();
        assert!(store.revoke(jti).await.unwrap());
    }
    // A gateway polling from 0 walks the log page by page, `last` carrying it on.
    let mut after = 0;
    let mut seen = Vec::new();
    for expected_last in [3, 6, 7] {
        let page = store.revocations(after).await.unwrap();
        assert_eq!(page.last, expected_last);
        seen.extend(page.jtis);
        after = page.last;
    }
    assert_eq!(seen, jtis);
    let done = store.revocations(after).await.unwrap();
    assert_eq!((done.jtis.len(), done.last), (0, 7));
    test.cleanup().await;
}

/// The memory store is the reference the Redis one is checked against; make sure a fresh one
/// really starts at a recent epoch of its own.
#[tokio::test]
async fn memory_epoch_is_when_the_store_was_built() {
    let before = now_ms();
    let store = MemorySessionStore::new(10);
    let epoch = store.revocations(0).await.unwrap().epoch_ms;
    assert!((before..=now_ms()).contains(&epoch));
}
