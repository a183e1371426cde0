//! The direct intake (`order.queue = "direct"`, the default) on every real database engine:
//! concurrent publishers make exactly one `created` order per request, durable when `publish`
//! returns, and a journal left by an earlier run becomes orders when the service assembles.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use async_trait::async_trait;
use flashsale_order::testing::order_request;
use flashsale_order::{
    model::{OrderRequest, OrderStatus},
    queue::{direct::DirectQueue, JournalQueue, OrderQueue, QueueError},
    release::{ReleaseError, StockReleaser},
    store::{OrderStore, SqlOrderStore},
};
use flashsale_proto::order::orders_server::Orders;
use flashsale_storage::{on_every_engine, testing::TestDatabase};

on_every_engine!(
    schemas = [flashsale_order::schema];
    the_direct_intake_writes_each_request_once_as_a_created_order,
    a_journal_left_behind_becomes_orders_under_the_direct_intake,
);

fn request(n: usize) -> OrderRequest {
    order_request(n as i64, n as u128 + 1)
}

/// The order service needs a releaser; nothing in these tests cancels or expires an order.
struct NoReleases;

#[async_trait]
impl StockReleaser for NoReleases {
    async fn release(&self, order_id: &str) -> Result<(), ReleaseError> {
        panic!("nothing is released in these tests, yet {order_id} was");
    }
}

/// The direct intake: many concurrent publishers (each request twice, as a retrying gateway
/// would, and one under another order id with the same idempotency key) make exactly one
/// `created` order per request, each readable as soon as its publish returned, with nothing in
/// the journal; a stale request is refused and written nowhere.
async fn the_direct_intake_writes_each_request_once_as_a_created_order(t: TestDatabase) {
    const ORDERS: usize = 200;
    const TIMEOUT_MS: i64 = 60_000;
    let store: Arc<dyn OrderStore> = Arc::new(SqlOrderStore::new(t.db.clone()));
    let queue = DirectQueue::open(Arc::clone(&store), 64, 10_000, TIMEOUT_MS);
    let publishers = (0..ORDERS).map(|n| {
        let queue = Arc::clone(&queue);
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let r = request(n);
            queue.publish(r.clone()).await.unwrap();
            // Durable once published: the order is there before the second copy is sent.
            let order = store
                .get(&r.order_id)
                .await
                .unwrap()
                .expect("published, not written");
            assert_eq!(
                (order.status, order.expires_at_ms),
                (OrderStatus::Created, r.accepted_at_ms + TIMEOUT_MS)
            );
            queue.publish(r.clone()).await.unwrap();
            let mut clash = r;
            clash.order_id = uuid::Uuid::new_v4().to_string();
            queue.publish(clash).await.unwrap();
        })
    });
    for publisher in futures::future::join_all(publishers).await {
        publisher.unwrap();
    }
    let mut stale = request(ORDERS + 1);
    stale.accepted_at_ms -= 20_000;
    assert!(matches!(
        queue.publish(stale.clone()).await,
        Err(QueueError::Stale { .. })
    ));
    assert!(store.get(&stale.order_id).await.unwrap().is_none());
    let orders = t.scalar("SELECT COUNT(*) FROM orders").await;
    let queued = t.scalar("SELECT COUNT(*) FROM order_queue").await;
    assert_eq!((orders, queued), (ORDERS as i64, 0));
    // Nothing waits for a consumer: nothing is delivered, nothing is pending.
    assert!(queue.next_batch(10).await.unwrap().is_empty());
    assert_eq!(queue.depth(), 0);
    assert!(queue.find(1, &request(1).order_id).await.unwrap().is_none());
}

/// A shop moving from the journal to the direct intake (or a journal left by a crash): the
/// order service, assembled with the direct intake, writes what the journal still holds as
/// orders before it answers, and empties the journal.
async fn a_journal_left_behind_becomes_orders_under_the_direct_intake(t: TestDatabase) {
    {
        let journal = JournalQueue::open(t.db.clone(), 64, 60_000).await.unwrap();
        for n in 0..5 {
            journal.publish(request(n)).await.unwrap();
        }
    }
    assert_eq!(t.scalar("SELECT COUNT(*) FROM order_queue").await, 5);
    let releaser = Arc::new(NoReleases);
    let stops = flashsale_kernel::Stops::default();
    let assembled = flashsale_order::assemble::assemble(
        &flashsale_order::OrderConfig::default(),
        flashsale_order::assemble::OrderParts {
            db: t.db.clone(),
            releaser,
            clock: Arc::new(flashsale_kernel::clock::SystemClock::new()),
        },
        &stops,
    )
    .await
    .unwrap();
    let orders = t.scalar("SELECT COUNT(*) FROM orders").await;
    let queued = t.scalar("SELECT COUNT(*) FROM order_queue").await;
    assert_eq!((orders, queued), (5, 0));
    let order = assembled
        .service
        .get_order(tonic::Request::new(
            flashsale_proto::order::GetOrderRequest {
                order_id: request(3).order_id,
                user_id: 3,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(
        order.status,
        flashsale_proto::order::OrderStatus::Created as i32
    );
    assert_eq!(assembled.workers.names(), vec!["order.expiry"]);
    stops.workers.cancel();
}
