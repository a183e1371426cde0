//! Guarantees 1, 2 and 4 under real concurrency: thousands of buyers on real HTTP connections
//! rush a small sale at the same instant, each retrying with the same and with a new
//! idempotency key. Exactly `stock` orders may result, one per user, the same key must always
//! name the same order, and nothing may fail with a 5xx. The rush runs on both backends: state
//! in process, and limits, sessions and stock in the real Redis.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crate::common::{ip, Backend, TestApp};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::Barrier;

const BUYERS: usize = 2000;
const STOCK: i64 = 100;

/// What one buyer saw.
#[derive(Debug)]
struct Attempts {
    user: usize,
    /// (status, order id if 202) for: key A, key A again, key B.
    results: Vec<(StatusCode, Option<String>)>,
}

async fn outcome(r: reqwest::Response) -> (StatusCode, Option<String>) {
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(!status.is_server_error(), "{status}: {body}");
    let order = (status == StatusCode::ACCEPTED).then(|| {
        assert_eq!(body["status"], "pending");
        body["order_id"].as_str().unwrap().to_owned()
    });
    (status, order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rush_sells_exactly_the_stock_once_per_user() {
    rush(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rush_sells_exactly_the_stock_once_per_user_on_redis() {
    rush(Backend::Redis).await;
}

async fn rush(backend: Backend) {
    // A generous budget: this test is about correctness under contention on a shared 2-core
    // debug build, where the default 500 ms budget would turn queueing into 504s. Latency is
    // measured by `flashsale bench`, not here.
    let Some(app) = TestApp::spawn_on_with(backend, |c| {
        c.gateway.budget_ms = 20_000;
        // The timing rules of `Config::check`: a queued buy may be as old as its budget, and
        // holds are voided only well after that.
        c.order.max_accept_age_ms = 25_000;
        c.inventory.reservation_grace_ms = 45_000;
        // Likewise for Redis calls: 2,000 buyers at once queue up in this debug build.
        c.redis.response_timeout_ms = 5_000;
    })
    .await
    else {
        return;
    };
    let app = Arc::new(app);
    let sale = app.open_sale(STOCK, 1).await;

    // Prepare the buyers (not part of the rush).
    let tokens = app.customers(BUYERS).await;

    // The rush: every buyer released at once.
    let barrier = Arc::new(Barrier::new(BUYERS));
    let tasks: Vec<_> = tokens
        .into_iter()
        .enumerate()
        .map(|(n, token)| {
            let app = Arc::clone(&app);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                let client_ip = ip(n);
                let mut results = Vec::new();
                for key in ["key-a", "key-a", "key-b"] {
                    results.push(outcome(app.buy(sale, &token, &client_ip, key).await).await);
                }
                Attempts { user: n, results }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.push(t.await.unwrap());
    }

    let mut orders_by_user: HashMap<usize, HashSet<String>> = HashMap::new();
    for a in &all {
        for (status, order) in &a.results {
            assert!(
                [
                    StatusCode::ACCEPTED,
                    StatusCode::CONFLICT,
                    StatusCode::TOO_MANY_REQUESTS
                ]
                .contains(status),
                "user {} got {status}",
                a.user
            );
            if let Some(order) = order {
                orders_by_user
                    .entry(a.user)
                    .or_default()
                    .insert(order.clone());
            }
        }
        // Same key → same order: a retry of an accepted buy is accepted with the same id.
        if let (StatusCode::ACCEPTED, Some(first)) = &a.results[0] {
            assert_eq!(
                a.results[1].1.as_ref(),
                Some(first),
                "user {}: retry changed the order",
                a.user
            );
            // A new key cannot buy past the per-user limit of 1.
            assert_ne!(
                a.results[2].0,
                StatusCode::ACCEPTED,
                "user {} bought twice",
                a.user
            );
        }
    }
    // One order per user, exactly the stock in total.
    assert!(orders_by_user.values().all(|ids| ids.len() == 1));
    let accepted: HashSet<String> = orders_by_user.values().flatten().cloned().collect();
    assert_eq!(accepted.len(), STOCK as usize, "accepted orders");
    assert_eq!(crate::common::remaining(&app, sale).await, 0);

    // Every accepted order is persisted exactly once (checked in the database itself).
    let stored = app.stored_orders(sale, accepted.len()).await;
    let stored_ids: HashSet<String> = stored.iter().map(|(id, _)| id.clone()).collect();
    let stored_users: HashSet<i64> = stored.iter().map(|(_, u)| *u).collect();
    assert_eq!(stored.len(), STOCK as usize);
    assert_eq!(stored_ids, accepted);
    assert_eq!(
        stored_users.len(),
        STOCK as usize,
        "a user holds two orders"
    );
    if let Ok(app) = Arc::try_unwrap(app) {
        app.finish().await;
    }
}
