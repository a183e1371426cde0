//! The SQL catalog on every real database engine (SQLite, PostgreSQL, MariaDB/MySQL — one suite,
//! each test on a database of its own): sales round-trip, the reservations the database implies
//! are exactly its live and released orders plus the queued requests not yet written, and
//! `known_orders` finds ids in either table across its chunking.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use flashsale_order::held::JournalHeld;
use std::collections::HashSet;

use flashsale_inventory::{
    catalog::{Catalog, SqlCatalog, StoredReservation},
    sale::NewSale,
};
use flashsale_storage::{on_every_engine, testing::TestDatabase, Arg};

on_every_engine!(
    schemas = [flashsale_inventory::schema, flashsale_order::schema];
    sales_round_trip_in_id_order,
    reservations_are_the_orders_and_the_queued_requests,
    known_orders_are_found_in_either_table,
);

fn new_sale(name: &str, stock: i64) -> NewSale {
    NewSale {
        name: name.into(),
        price_cents: 1999,
        stock,
        per_user_limit: 2,
        starts_at_ms: 1_000,
        ends_at_ms: 2_000,
    }
}

async fn sales_round_trip_in_id_order(t: TestDatabase) {
    let catalog = SqlCatalog::new(t.db.clone(), JournalHeld::shared(t.db.clone()));
    assert!(catalog.list().await.unwrap().is_empty());
    let first = catalog.create(&new_sale("  first  ", 10)).await.unwrap();
    let second = catalog.create(&new_sale("second", 20)).await.unwrap();
    assert!(second.id > first.id, "{} then {}", first.id, second.id);
    assert_eq!(first.name, "first", "names are stored trimmed");
    assert_eq!(
        (second.stock, second.price_cents, second.per_user_limit),
        (20, 1999, 2)
    );
    assert_eq!(catalog.list().await.unwrap(), vec![first, second]);
}

async fn insert_order(t: &TestDatabase, id: &str, sale: i64, user: i64, qty: i64, status: &str) {
    t.db.execute(
        "INSERT INTO orders (id, user_id, sale_id, quantity, price_cents, idempotency_key, status,
         created_at_ms, updated_at_ms, expires_at_ms) VALUES (?, ?, ?, ?, 100, ?, ?, 0, 0, 0)",
        &[
            id.into(),
            user.into(),
            sale.into(),
            qty.into(),
            id.into(),
            status.into(),
        ],
    )
    .await
    .unwrap();
}

async fn queue_request(t: &TestDatabase, id: &str, sale: i64, user: i64, qty: i64) {
    let args: [Arg<'_>; 5] = [id.into(), user.into(), sale.into(), qty.into(), id.into()];
    t.db.execute(
        "INSERT INTO order_queue (order_id, user_id, sale_id, quantity, price_cents,
         idempotency_key, accepted_at_ms) VALUES (?, ?, ?, ?, 100, ?, 0)",
        &args,
    )
    .await
    .unwrap();
}

fn held(order_id: &str, user_id: i64, quantity: i64, released: bool) -> StoredReservation {
    StoredReservation {
        order_id: order_id.into(),
        sale_id: 1,
        user_id,
        quantity,
        released,
    }
}

async fn reservations_are_the_orders_and_the_queued_requests(t: TestDatabase) {
    let catalog = SqlCatalog::new(t.db.clone(), JournalHeld::shared(t.db.clone()));
    for (id, user, qty, status) in [
        ("created", 1, 1, "created"),
        ("paid", 2, 2, "paid"),
        ("cancelled", 3, 1, "cancelled"),
        ("expired", 4, 1, "expired"),
        ("written", 5, 1, "created"),
    ] {
        insert_order(&t, id, 1, user, qty, status).await;
    }
    queue_request(&t, "queued", 1, 6, 2).await;
    // Written and not yet acknowledged: in both tables, counted once (as the order).
    queue_request(&t, "written", 1, 5, 1).await;
    let mut got = catalog.load_reservations().await.unwrap();
    got.sort_by(|a, b| a.order_id.cmp(&b.order_id));
    assert_eq!(
        got,
        vec![
            held("cancelled", 3, 1, true),
            held("created", 1, 1, false),
            held("expired", 4, 1, true),
            held("paid", 2, 2, false),
            held("queued", 6, 2, false),
            held("written", 5, 1, false),
        ]
    );
}

async fn known_orders_are_found_in_either_table(t: TestDatabase) {
    let catalog = SqlCatalog::new(t.db.clone(), JournalHeld::shared(t.db.clone()));
    // More ids than one statement's chunk (500), known ones spread over all chunks.
    let ids: Vec<String> = (0..1_200).map(|n| format!("order-{n:04}")).collect();
    let mut expected = HashSet::new();
    for (n, id) in ids.iter().enumerate() {
        match n % 4 {
            0 => insert_order(&t, id, 1, n as i64, 1, "created").await,
            1 => queue_request(&t, id, 1, n as i64, 1).await,
            _ => continue,
        }
        expected.insert(id.clone());
    }
    let known: Vec<String> = catalog.known_orders(&ids).await.unwrap();
    let unique: HashSet<String> = known.iter().cloned().collect();
    assert_eq!(unique.len(), known.len(), "an id is reported twice");
    assert_eq!(unique, expected);
    assert!(catalog.known_orders(&[]).await.unwrap().is_empty());
}
