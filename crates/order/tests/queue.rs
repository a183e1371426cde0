//! One behavioural suite for every order queue backend: the embedded journal (on each database
//! engine) and NATS JetStream (real server, a stream of the test's own). Publish → deliver →
//! ack; what was delivered and not acknowledged comes again after a reopen, what was
//! acknowledged does not, even when the reopen follows the ack at once; one order id published
//! several times is one entry of the queue; a stale request is refused and never delivered;
//! queued requests are found until acknowledged.
//!
//! "Nothing else is delivered" is checked without sleeping: a sentinel request is published
//! last, and everything delivered before it is what the queue had.
//!
//! Then the redelivery guarantee end to end with NATS on each engine: the same request
//! published five times, the consumer "crashing" after its commit and before its ack, a new
//! consumer taking over — one order.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{collections::HashSet, sync::Arc, time::Duration};

use flashsale_order::testing::order_request;
use flashsale_order::{
    model::OrderRequest,
    queue::{nats::NatsQueue, JournalQueue, OrderQueue, QueueError},
    store::{OrderStore, SqlOrderStore},
    testing::TestNats,
};
use flashsale_storage::{now_ms, on_every_engine, testing::TestDatabase};
use flashsale_testkit::eventually;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const MAX_AGE_MS: i64 = 10_000;
const WAIT: Duration = Duration::from_secs(15);

/// A queue backend under test, reopenable (a restart of the order process).
enum Backend {
    Journal(TestDatabase),
    Nats(TestNats),
}

impl Backend {
    async fn open(&self) -> Arc<dyn OrderQueue> {
        match self {
            Self::Journal(t) => JournalQueue::open(t.db.clone(), 64, MAX_AGE_MS)
                .await
                .unwrap(),
            Self::Nats(n) => NatsQueue::open(&n.config, 64, MAX_AGE_MS).await.unwrap(),
        }
    }
}

fn request(user_id: i64, n: u128) -> OrderRequest {
    order_request(user_id, n)
}

/// Delivers until `until` arrives (which is included); everything delivered, in order.
async fn deliver_until(queue: &dyn OrderQueue, until: &str) -> Vec<OrderRequest> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while !got.iter().any(|r: &OrderRequest| r.order_id == until) {
        let batch = tokio::time::timeout_at(deadline, queue.next_batch(16))
            .await
            .unwrap_or_else(|_| panic!("{until} not delivered in time; got {}", got.len()));
        got.extend(batch.unwrap());
    }
    got
}

/// Waits until `find` answers `present` (and then the very request).
async fn wait_found(queue: &dyn OrderQueue, r: &OrderRequest, present: bool) {
    let found = eventually(
        format!("find({}) to answer present = {present}", r.order_id),
        WAIT,
        || async {
            let found = queue.find(r.user_id, &r.order_id).await.unwrap();
            (found.is_some() == present).then_some(found)
        },
    )
    .await;
    if let Some(found) = found {
        assert_eq!(&found, r);
    }
}

fn ids(requests: &[OrderRequest]) -> Vec<&str> {
    requests.iter().map(|r| r.order_id.as_str()).collect()
}

async fn publish_deliver_ack(backend: &Backend) {
    let queue = backend.open().await;
    let (a, b, c) = (request(7, 1), request(7, 2), request(8, 3));
    for r in [&a, &b, &c] {
        queue.publish(r.clone()).await.unwrap();
    }
    // Queued: found by id (for its own user only) and listed for the user, newest first.
    wait_found(&*queue, &a, true).await;
    assert!(queue.find(8, &a.order_id).await.unwrap().is_none());
    let listed = queue.find_for_user(7, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|r| &r.order_id).collect::<HashSet<_>>(),
        HashSet::from([&a.order_id, &b.order_id])
    );
    let delivered = deliver_until(&*queue, &c.order_id).await;
    assert_eq!(ids(&delivered), ids(&[a.clone(), b.clone(), c.clone()]));
    queue
        .ack(&[a.order_id.clone(), b.order_id.clone(), c.order_id.clone()])
        .await
        .unwrap();
    for r in [&a, &b, &c] {
        wait_found(&*queue, r, false).await;
    }
    drop(queue);
    // Acknowledged requests are gone for good: after a reopen only the sentinel comes.
    let queue = backend.open().await;
    let sentinel = request(9, 4);
    queue.publish(sentinel.clone()).await.unwrap();
    let delivered = deliver_until(&*queue, &sentinel.order_id).await;
    assert_eq!(ids(&delivered), vec![sentinel.order_id.as_str()]);
    queue.ack(&[sentinel.order_id]).await.unwrap();
}

async fn unacked_requests_are_redelivered_after_reopen(backend: &Backend) {
    let queue = backend.open().await;
    let (a, b) = (request(7, 11), request(7, 12));
    queue.publish(a.clone()).await.unwrap();
    queue.publish(b.clone()).await.unwrap();
    let first = deliver_until(&*queue, &b.order_id).await;
    assert_eq!(ids(&first), ids(&[a.clone(), b.clone()]));
    // Only `a` is acknowledged before the "crash".
    queue.ack(std::slice::from_ref(&a.order_id)).await.unwrap();
    wait_found(&*queue, &a, false).await;
    drop(queue);

    let queue = backend.open().await;
    let sentinel = request(9, 13);
    queue.publish(sentinel.clone()).await.unwrap();
    let again = deliver_until(&*queue, &sentinel.order_id).await;
    assert_eq!(
        ids(&again),
        vec![b.order_id.as_str(), sentinel.order_id.as_str()]
    );
    assert_eq!(again[0], b);
    queue
        .ack(&[b.order_id.clone(), sentinel.order_id])
        .await
        .unwrap();
    wait_found(&*queue, &b, false).await;
}

/// One order id published three times is one entry of the queue: listed once, gone after one
/// acknowledgement, not redelivered after a reopen. NATS drops the duplicates at the stream
/// (`Nats-Msg-Id`), so it delivers the request exactly once; the journal hands each publish to
/// its in-process consumer (the order table's keys absorb the repeats), so it may deliver it
/// up to three times.
async fn one_order_id_published_thrice_is_one_entry(backend: &Backend) {
    let queue = backend.open().await;
    let a = request(7, 21);
    for _ in 0..3 {
        queue.publish(a.clone()).await.unwrap();
    }
    let sentinel = request(7, 22);
    queue.publish(sentinel.clone()).await.unwrap();
    let listed = queue.find_for_user(7, 10).await.unwrap();
    let mut listed = ids(&listed);
    listed.sort_unstable();
    assert_eq!(
        listed,
        vec![a.order_id.as_str(), sentinel.order_id.as_str()]
    );
    let delivered = deliver_until(&*queue, &sentinel.order_id).await;
    let copies = delivered
        .iter()
        .filter(|r| r.order_id == a.order_id)
        .count();
    assert_eq!(delivered.len(), copies + 1, "only a and the sentinel");
    match backend {
        Backend::Nats(_) => assert_eq!(copies, 1),
        Backend::Journal(_) => assert!((1..=3).contains(&copies)),
    }
    queue
        .ack(&[a.order_id.clone(), sentinel.order_id.clone()])
        .await
        .unwrap();
    wait_found(&*queue, &a, false).await;
    wait_found(&*queue, &sentinel, false).await;
    drop(queue);
    let queue = backend.open().await;
    let after = request(7, 23);
    queue.publish(after.clone()).await.unwrap();
    let delivered = deliver_until(&*queue, &after.order_id).await;
    assert_eq!(ids(&delivered), vec![after.order_id.as_str()]);
    queue.ack(&[after.order_id]).await.unwrap();
}

async fn stale_requests_are_refused(backend: &Backend) {
    let queue = backend.open().await;
    let mut stale = request(7, 31);
    stale.accepted_at_ms = now_ms() - MAX_AGE_MS - 1_000;
    match queue.publish(stale.clone()).await {
        Err(QueueError::Stale { age_ms }) => assert!(age_ms > MAX_AGE_MS),
        other => panic!("a stale request was not refused: {other:?}"),
    }
    let sentinel = request(7, 32);
    queue.publish(sentinel.clone()).await.unwrap();
    let delivered = deliver_until(&*queue, &sentinel.order_id).await;
    assert_eq!(ids(&delivered), vec![sentinel.order_id.as_str()]);
    assert!(queue.find(7, &stale.order_id).await.unwrap().is_none());
    queue.ack(&[sentinel.order_id]).await.unwrap();
}

/// An acknowledgement holds once `ack` returns: the queue reopened at once (a restart right
/// after a commit) never delivers the request again. Repeated, because a lost ack is a race.
async fn an_ack_holds_across_an_immediate_reopen(backend: &Backend) {
    for n in 0..REOPENS {
        let queue = backend.open().await;
        let r = request(7, 40 + n);
        queue.publish(r.clone()).await.unwrap();
        let delivered = deliver_until(&*queue, &r.order_id).await;
        assert_eq!(ids(&delivered), vec![r.order_id.as_str()], "reopen {n}");
        queue.ack(std::slice::from_ref(&r.order_id)).await.unwrap();
    }
    let queue = backend.open().await;
    let sentinel = request(9, 40 + REOPENS);
    queue.publish(sentinel.clone()).await.unwrap();
    let delivered = deliver_until(&*queue, &sentinel.order_id).await;
    assert_eq!(ids(&delivered), vec![sentinel.order_id.as_str()]);
    queue
        .ack(std::slice::from_ref(&sentinel.order_id))
        .await
        .unwrap();
    wait_found(&*queue, &sentinel, false).await;
}

/// Reopens in [`an_ack_holds_across_an_immediate_reopen`].
const REOPENS: u128 = 20;

/// The suite on one backend.
async fn conformance(backend: Backend) {
    publish_deliver_ack(&backend).await;
    an_ack_holds_across_an_immediate_reopen(&backend).await;
    unacked_requests_are_redelivered_after_reopen(&backend).await;
    one_order_id_published_thrice_is_one_entry(&backend).await;
    stale_requests_are_refused(&backend).await;
}

async fn journal_conforms(t: TestDatabase) {
    conformance(Backend::Journal(t)).await;
}

on_every_engine!(schemas = [flashsale_order::schema]; journal_conforms, nats_redelivery_makes_one_order);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_conforms() {
    let Some(nats) = TestNats::start().await else {
        return;
    };
    conformance(Backend::Nats(nats.clone())).await;
    nats.cleanup().await;
}

/// Publish one request five times among others; a consumer takes a batch, commits it and dies
/// before acknowledging (mid-batch); a new process's consumer then drains the stream. One order
/// per order id, the five publishes included.
async fn nats_redelivery_makes_one_order(t: TestDatabase) {
    let Some(nats) = TestNats::start().await else {
        return;
    };
    let store: Arc<dyn OrderStore> = Arc::new(SqlOrderStore::new(t.db.clone()));
    let queue = NatsQueue::open(&nats.config, 64, MAX_AGE_MS).await.unwrap();
    let twice = request(1, 100);
    let mut all: Vec<OrderRequest> = (0..40).map(|n| request(n + 2, 200 + n as u128)).collect();
    for _ in 0..5 {
        queue.publish(twice.clone()).await.unwrap();
    }
    for r in &all {
        queue.publish(r.clone()).await.unwrap();
    }
    all.push(twice.clone());
    // The first consumer: one batch, committed, never acknowledged.
    let batch = queue.next_batch(16).await.unwrap();
    assert!(batch.iter().any(|r| r.order_id == twice.order_id));
    store.insert_batch(&batch, 60_000).await.unwrap();
    drop(queue);

    // The restarted consumer drains everything, redelivered batch included.
    let queue: Arc<dyn OrderQueue> = NatsQueue::open(&nats.config, 64, MAX_AGE_MS).await.unwrap();
    let shutdown = CancellationToken::new();
    let consumer = tokio::spawn(flashsale_order::consumer::run(
        Arc::clone(&queue),
        Arc::clone(&store),
        64,
        60_000,
        shutdown.clone(),
    ));
    eventually(
        "the restarted consumer to drain the queue",
        WAIT,
        || async {
            let stored = t.scalar("SELECT COUNT(*) FROM orders").await;
            let queued = queue.find_for_user(1, 10).await.unwrap().len();
            if stored == all.len() as i64 && queued == 0 && queue.depth() == 0 {
                Ok(())
            } else {
                Err(format!("{stored} orders, lag {}", queue.depth()))
            }
        },
    )
    .await;
    shutdown.cancel();
    consumer.await.unwrap();
    let twice_rows = t
        .strings(&format!(
            "SELECT id FROM orders WHERE id = '{}'",
            twice.order_id
        ))
        .await;
    assert_eq!(twice_rows.len(), 1);
    let stored: HashSet<String> = t
        .strings("SELECT id FROM orders")
        .await
        .into_iter()
        .collect();
    let expected: HashSet<String> = all.iter().map(|r| r.order_id.clone()).collect();
    assert_eq!(stored, expected);
    nats_queue_empties(&nats).await;
    nats.cleanup().await;
}

/// Waits until nothing is left in the test's stream.
async fn nats_queue_empties(nats: &TestNats) {
    let stream = flashsale_order::queue::nats::NatsStream::connect(&nats.config)
        .await
        .unwrap();
    let stream = &stream;
    eventually("the NATS stream to be empty", WAIT, || async move {
        let queued = stream.queued().await.unwrap().len();
        if queued == 0 {
            Ok(())
        } else {
            Err(format!("{queued} requests queued"))
        }
    })
    .await;
}
