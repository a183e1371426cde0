//! The stock in Redis is lost in the middle of a rush (as after a Redis restart without
//! persistence or a FLUSHALL): the sale pauses, is rebuilt from the database once every
//! reservation taken before the loss has either reached the order journal or can no longer
//! reach it, and sells on — never more than its stock.
//!
//! Other tests share the Redis server, so the loss is simulated by deleting this test's stock
//! keys (its own prefix) rather than by a FLUSHALL.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::common::{ip, Backend, TestApp};
use flashsale_testkit::Eventually;
use futures::{stream, StreamExt};
use redis::AsyncCommands;
use reqwest::StatusCode;

const USERS: usize = 300;
const STOCK: i64 = 400;
const LIMIT: i64 = 2;

/// Loses every stock key of the app's Redis prefix — the sale's counters first, at once, then
/// the reservations; returns how many keys there were.
async fn lose_the_stock(app: &TestApp, sale: i64) -> usize {
    let redis = app.redis.as_ref().unwrap();
    let mut conn = redis.redis.conn();
    let counters = [
        redis.redis.key(&format!("stock:sale:{sale}")),
        redis.redis.key(&format!("stock:sale:{sale}:held")),
        redis.redis.key("stock:unconfirmed"),
    ];
    let gone: usize = conn.del(&counters).await.unwrap();
    let keys = redis
        .keys(&format!("{}stock:*", redis.config.key_prefix))
        .await;
    for chunk in keys.chunks(500) {
        let _: () = conn.del(chunk).await.unwrap();
    }
    gone + keys.len()
}

/// Each user (64 at a time) buys once per key, retrying a key after a `503` (the paused sale,
/// counted in `paused`) or a `504` (a buy that queued past its budget on a loaded machine)
/// until it gets a final answer. Returns (status, order id) per user and key.
async fn rush(
    app: &Arc<TestApp>,
    sale: i64,
    tokens: &[String],
    keys: &'static [&'static str],
    paused: Arc<AtomicUsize>,
) -> Vec<Vec<(StatusCode, Option<String>)>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    stream::iter(tokens.iter().cloned().enumerate())
        .map(|(n, token)| {
            let (app, paused) = (Arc::clone(app), Arc::clone(&paused));
            async move {
                let mut out = Vec::new();
                for key in keys {
                    // A careful client: while the sale is paused (503) or slow (504), back off
                    // and retry the same key, until the rush's deadline.
                    let answer = Eventually::new(
                        format!("the sale to come back for buyer {n}"),
                        deadline.saturating_duration_since(tokio::time::Instant::now()),
                    )
                    .every(Duration::from_millis(100))
                    .until(|| async {
                        let r = app.buy(sale, &token, &ip(n), key).await;
                        let status = r.status();
                        if status == StatusCode::SERVICE_UNAVAILABLE
                            || status == StatusCode::GATEWAY_TIMEOUT
                        {
                            if status == StatusCode::SERVICE_UNAVAILABLE {
                                paused.fetch_add(1, Ordering::Relaxed);
                            }
                            return Err(status);
                        }
                        let body: serde_json::Value = r.json().await.unwrap();
                        let order = (status == StatusCode::ACCEPTED)
                            .then(|| body["order_id"].as_str().unwrap().to_owned());
                        Ok((status, order))
                    })
                    .await;
                    out.push(answer);
                }
                out
            }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_redis_stock_mid_rush_pauses_the_sale_and_never_oversells() {
    // Short timing rules (the smallest Config::check allows) so the pause is ~17 s, not 30 s.
    let Some(app) = TestApp::spawn_on_with(Backend::Redis, |c| {
        c.gateway.budget_ms = 1_000;
        c.order.max_accept_age_ms = 2_000;
        c.inventory.reservation_grace_ms = 17_000;
        c.gateway.limits = flashsale_gateway::config::LimitsConfig::off();
    })
    .await
    else {
        return;
    };
    let app = Arc::new(app);
    let sale = app.open_sale(STOCK, LIMIT).await;
    let tokens: Vec<String> = stream::iter(0..USERS)
        .map(|n| {
            let app = Arc::clone(&app);
            async move { app.customer(&format!("loss{n}@example.com"), &ip(n)).await }
        })
        .buffered(32)
        .collect()
        .await;

    // Phase 1, undisturbed: half the users buy one unit each.
    let paused = Arc::new(AtomicUsize::new(0));
    let mut results = rush(
        &app,
        sale,
        &tokens[..USERS / 2],
        &["first"],
        Arc::clone(&paused),
    )
    .await;
    assert_eq!(
        results.iter().flatten().filter(|r| r.1.is_some()).count(),
        USERS / 2
    );
    assert_eq!(paused.load(Ordering::Relaxed), 0, "paused before the loss");
    // Phase 2: everyone buys up to the limit, and the stock disappears from Redis while the
    // first of these buys are in flight.
    let (phase2, deleted) = tokio::join!(
        rush(
            &app,
            sale,
            &tokens,
            &["second", "third"],
            Arc::clone(&paused),
        ),
        lose_the_stock(&app, sale)
    );
    assert!(deleted > 0, "no stock keys to lose");
    results.extend(phase2);

    let mut answered: HashMap<StatusCode, usize> = HashMap::new();
    for (status, _) in results.iter().flatten() {
        *answered.entry(*status).or_default() += 1;
    }
    assert!(
        paused.load(Ordering::Relaxed) > 0,
        "nobody noticed the pause: {answered:?}"
    );
    let accepted_ids: Vec<&String> = results
        .iter()
        .flatten()
        .filter_map(|(_, o)| o.as_ref())
        .collect();
    assert_eq!(
        accepted_ids.len(),
        usize::try_from(STOCK).unwrap(),
        "answers: {answered:?}"
    );
    assert!(answered
        .keys()
        .all(|s| *s == StatusCode::ACCEPTED || *s == StatusCode::CONFLICT));

    // The database agrees: exactly the stock, nobody above the limit, every 202 stored.
    let rows = app.stored_orders(sale, accepted_ids.len()).await;
    assert_eq!(rows.len(), usize::try_from(STOCK).unwrap());
    let mut per_user: HashMap<i64, i64> = HashMap::new();
    for (id, user) in &rows {
        assert!(
            accepted_ids.contains(&id),
            "order {id} was never answered 202"
        );
        *per_user.entry(*user).or_default() += 1;
    }
    assert!(
        per_user.values().all(|n| *n <= LIMIT),
        "a user above the limit"
    );
    crate::common::page_shows_remaining(&app, sale, 0).await;
    if let Ok(app) = Arc::try_unwrap(app) {
        app.finish().await;
    }
}
