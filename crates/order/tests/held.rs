//! What the order side tells the inventory with the NATS queue (real NATS, every database
//! engine): requests still in the stream count as reservations and as known orders, alongside
//! the orders table, each order once even while it is in both (committed, not yet acknowledged).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;

use flashsale_kernel::held_stock::HeldStock;
use flashsale_order::testing::order_request;
use flashsale_order::{
    held::{JournalHeld, NatsHeld},
    model::OrderRequest,
    queue::nats::NatsStream,
    store::{OrderStore, SqlOrderStore},
    testing::TestNats,
};
use flashsale_storage::{on_every_engine, testing::TestDatabase};

on_every_engine!(schemas = [flashsale_order::schema]; queued_requests_hold_stock_and_are_known);

fn request(n: u128) -> OrderRequest {
    OrderRequest {
        quantity: 2,
        ..order_request(n as i64, n)
    }
}

async fn queued_requests_hold_stock_and_are_known(t: TestDatabase) {
    let Some(nats) = TestNats::start().await else {
        return;
    };
    let stream = NatsStream::connect(&nats.config).await.unwrap();
    let (stored, in_both, queued) = (request(1), request(2), request(3));
    // `stored` is only in the table, `queued` only in the stream, `in_both` in both.
    SqlOrderStore::new(t.db.clone())
        .insert_batch(&[stored.clone(), in_both.clone()], 60_000)
        .await
        .unwrap();
    stream.publish(&in_both).await.unwrap();
    stream.publish(&queued).await.unwrap();

    let catalog = NatsHeld::new(JournalHeld::new(t.db.clone()), stream);
    let reservations = catalog.reservations().await.unwrap();
    let ids: Vec<&str> = reservations.iter().map(|r| r.order_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "each order once: {ids:?}");
    assert_eq!(
        ids.iter().copied().collect::<HashSet<_>>(),
        HashSet::from([
            stored.order_id.as_str(),
            in_both.order_id.as_str(),
            queued.order_id.as_str()
        ])
    );
    let q = reservations
        .iter()
        .find(|r| r.order_id == queued.order_id)
        .unwrap();
    assert_eq!(
        (q.sale_id, q.user_id, q.quantity, q.released),
        (1, 3, 2, false)
    );

    let unknown = uuid::Uuid::from_u128(99).to_string();
    let known: HashSet<String> = catalog
        .known(&[
            stored.order_id.clone(),
            queued.order_id.clone(),
            in_both.order_id.clone(),
            unknown,
        ])
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        known,
        HashSet::from([stored.order_id, queued.order_id, in_both.order_id])
    );
    assert!(catalog.known(&[]).await.unwrap().is_empty());
    nats.cleanup().await;
}
