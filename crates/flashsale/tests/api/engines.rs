//! The whole system (`flashsale dev` composition, real HTTP) on each database engine: SQLite,
//! PostgreSQL and MariaDB/MySQL, each on a database of the test's own. A small sale is rushed
//! by more buyers than it has stock: exactly the stock is sold, every `202` is stored once, and
//! `remaining + sold == stock` — in the API and in the database. And a database created before
//! each service owned its tables keeps its data when the services migrate their own.

use std::{collections::HashSet, sync::Arc};

use crate::common::{ip, TestApp};
use flashsale_storage::{on_every_engine, testing::TestDatabase};
use reqwest::StatusCode;
use tokio::sync::Barrier;

const BUYERS: usize = 120;
const STOCK: i64 = 40;

on_every_engine!(
    a_rush_sells_exactly_the_stock,
    a_database_from_before_the_split_keeps_its_rows_and_gains_the_services_versions
);

async fn a_database_from_before_the_split_keeps_its_rows_and_gains_the_services_versions(
    t: TestDatabase,
) {
    // The database as the single shared migration set left it (versions 1-3), with rows.
    t.db.migrate(flashsale_storage::schema::legacy)
        .await
        .unwrap();
    t.execute(
        "INSERT INTO users (email, password_hash, role, created_at_ms) VALUES ('old@example.com', 'h', 'customer', 1)",
    )
    .await;
    t.execute(
        "INSERT INTO order_queue (order_id, user_id, sale_id, quantity, price_cents, idempotency_key, accepted_at_ms, traceparent) \
         VALUES ('q1', 1, 1, 1, 100, 'k', 1, NULL)",
    )
    .await;
    // Each service migrates its own tables, twice (a restart): nothing fails, nothing is lost.
    for _ in 0..2 {
        for schema in [
            flashsale_auth::schema as flashsale_storage::Schema,
            flashsale_inventory::schema,
            flashsale_order::schema,
        ] {
            t.db.migrate(schema).await.unwrap();
        }
    }
    assert_eq!(t.scalar("SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(t.scalar("SELECT COUNT(*) FROM order_queue").await, 1);
    let versions: Vec<(i64,)> =
        t.db.fetch_all("SELECT version FROM _sqlx_migrations ORDER BY version", &[])
            .await
            .unwrap();
    assert_eq!(
        versions.into_iter().map(|(v,)| v).collect::<Vec<_>>(),
        [1, 2, 3, 1001, 2001, 3001]
    );
}

async fn a_rush_sells_exactly_the_stock(t: TestDatabase) {
    let url = t.url.clone();
    let app = TestApp::spawn_with(|c| {
        c.database_url = Some(url);
        // Correctness under contention on a shared debug build, not latency.
        c.gateway.budget_ms = 5_000;
    })
    .await;
    let app = Arc::new(app);
    let sale = app.open_sale(STOCK, 1).await;
    let tokens = app.customers(BUYERS).await;

    let barrier = Arc::new(Barrier::new(BUYERS));
    let buyers: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(n, token)| {
            let (app, barrier) = (Arc::clone(&app), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let r = app.buy(sale, &token, &ip(n), &format!("key-{n}")).await;
                let status = r.status();
                assert!(!status.is_server_error(), "buy answered {status}");
                if status == StatusCode::ACCEPTED {
                    Some((crate::common::accepted(r).await, n as i64))
                } else {
                    None
                }
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for b in buyers {
        if let Some(order) = b.await.unwrap() {
            accepted.push(order);
        }
    }
    assert_eq!(
        accepted.len() as i64,
        STOCK,
        "exactly the stock is accepted"
    );

    let stored = app.stored_orders(sale, accepted.len()).await;
    let stored_ids: HashSet<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(stored_ids.len(), stored.len(), "an order is stored twice");
    let accepted_ids: HashSet<&str> = accepted.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        stored_ids, accepted_ids,
        "every 202 is stored, nothing else"
    );
    let users: HashSet<i64> = stored.iter().map(|(_, user)| *user).collect();
    assert_eq!(users.len(), stored.len(), "a user holds two orders");

    let remaining = crate::common::remaining(&app, sale).await;
    assert_eq!(remaining + stored.len() as i64, STOCK);
    assert_eq!(remaining, 0);
    // The database agrees: its live orders are the units sold.
    let (sold,): (i64,) = t
        .db
        .fetch_one(
            "SELECT COUNT(*) FROM orders WHERE sale_id = ? AND status NOT IN ('cancelled', 'expired')",
            &[sale.into()],
        )
        .await
        .unwrap();
    assert_eq!(remaining + sold, STOCK);
    Arc::try_unwrap(app)
        .ok()
        .expect("every buyer is done")
        .finish()
        .await;
    // A graceful stop leaves nothing in the journal.
    assert_eq!(t.scalar("SELECT COUNT(*) FROM order_queue").await, 0);
}
