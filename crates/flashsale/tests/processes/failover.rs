//! Failover across real processes: every service registered with a `flashsale serve registry`,
//! two inventory processes sharing their stock in Redis, and one of them SIGKILLed in the
//! middle of a rush. The registry evicts it within its TTL; a second wave of buyers after the
//! eviction sees no failure at all; and the guarantees hold over both waves: exactly the stock
//! is sold, and every `202` is stored exactly once.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::common::{
    ip, next_set_where, spawn_binary, watch_registry, Api, ADMIN_EMAIL, ADMIN_PASSWORD,
};
use flashsale_testkit::{eventually, Eventually};
use futures::{stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::{process::Child, time::Instant};

const TTL_MS: u64 = 1_000;
const STOCK: i64 = 150;
/// Buyers per wave; two waves want more than the stock.
const WAVE: usize = 100;

async fn serve(service: &str, env: &[(&str, String)]) -> (Child, SocketAddr) {
    let name = format!("{}{}", service[..1].to_uppercase(), &service[1..]);
    spawn_binary(
        &["serve", service],
        env,
        &format!("flashsale serve {name}: listening on "),
    )
    .await
}

/// One buy, retried with the same key (idempotent) while it fails with a 5xx: what a careful
/// client does. Returns each answer's start time and status, and the order id if accepted.
async fn buy_until_answered(
    api: &Api,
    sale: i64,
    token: &str,
    client_ip: &str,
) -> (Vec<(Instant, StatusCode)>, Option<String>) {
    let log = std::sync::Mutex::new(Vec::new());
    let log = &log;
    let order = Eventually::new(
        format!("an answer but a 5xx to the buy of {client_ip}"),
        Duration::from_secs(60),
    )
    .every(Duration::from_millis(20))
    .until(|| async move {
        let started = Instant::now();
        let r = api.buy(sale, token, client_ip, "the-key").await;
        let status = r.status();
        log.lock().unwrap().push((started, status));
        if status.is_server_error() {
            return Err(status);
        }
        let body: Value = r.json().await.unwrap();
        Ok((status == StatusCode::ACCEPTED).then(|| body["order_id"].as_str().unwrap().to_owned()))
    })
    .await;
    let log = std::mem::take(&mut *log.lock().unwrap());
    (log, order)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_inventory_killed_during_a_rush_is_evicted_and_nothing_fails_afterwards() {
    let Some(redis) = flashsale_redis::testing::TestRedis::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("flashsale.db").display());
    let (mut registry, registry_addr) = serve(
        "registry",
        &[
            ("FLASHSALE_REGISTRY__ADDR", "127.0.0.1:0".into()),
            ("FLASHSALE_REGISTRY__TTL_MS", TTL_MS.to_string()),
        ],
    )
    .await;
    let env: Vec<(&str, String)> = vec![
        ("FLASHSALE_DATABASE_URL", database_url.clone()),
        (
            "FLASHSALE_JWT_SECRET",
            "an-integration-test-secret-of-32-bytes-or-more".to_owned(),
        ),
        ("FLASHSALE_REDIS__URL", redis.config.url.clone()),
        (
            "FLASHSALE_REDIS__KEY_PREFIX",
            redis.config.key_prefix.clone(),
        ),
        ("FLASHSALE_AUTH__SESSIONS", "redis".into()),
        ("FLASHSALE_GATEWAY__LIMITS__BACKEND", "redis".into()),
        ("FLASHSALE_INVENTORY__STOCK", "redis".into()),
        ("FLASHSALE_INVENTORY__CATALOG_REFRESH_MS", "100".into()),
        // Every test client is 127.0.0.1 (no trusted proxy): this test is about failover.
        ("FLASHSALE_GATEWAY__LIMITS__BUY_PER_IP", "off".into()),
        ("FLASHSALE_GATEWAY__LIMITS__BUY_PER_USER_SALE", "off".into()),
        ("FLASHSALE_GATEWAY__LIMITS__LOGIN_PER_IP", "off".into()),
        ("FLASHSALE_GATEWAY__LIMITS__REGISTER_PER_IP", "off".into()),
        ("FLASHSALE_GATEWAY__BUDGET_MS", "5000".into()),
        ("FLASHSALE_DISCOVERY__SOURCE", "registry".into()),
        (
            "FLASHSALE_DISCOVERY__REGISTRIES",
            format!("[\"{registry_addr}\"]"),
        ),
        ("FLASHSALE_DISCOVERY__HEARTBEAT_MS", "200".into()),
        ("FLASHSALE_SERVICES__AUTH", "127.0.0.1:0".into()),
        ("FLASHSALE_SERVICES__INVENTORY", "127.0.0.1:0".into()),
        ("FLASHSALE_SERVICES__ORDER", "127.0.0.1:0".into()),
        ("FLASHSALE_HTTP_ADDR", "127.0.0.1:0".into()),
    ];
    let mut auth_env = env.clone();
    auth_env.push(("FLASHSALE_ADMIN_EMAIL", ADMIN_EMAIL.into()));
    auth_env.push(("FLASHSALE_ADMIN_PASSWORD", ADMIN_PASSWORD.into()));
    let (mut auth, _) = serve("auth", &auth_env).await;
    let (mut inventory_a, _) = serve("inventory", &env).await;
    let (mut inventory_b, inventory_b_addr) = serve("inventory", &env).await;
    let (mut order, _) = serve("order", &env).await;
    let (mut gateway, http) = serve("gateway", &env).await;
    let api = Arc::new(Api::new(http));

    // The registry's view of the inventories, pushed.
    let mut watch = watch_registry(&registry_addr.to_string(), "inventory").await;
    next_set_where(
        &mut watch,
        Duration::from_secs(20),
        "the inventories never both registered",
        |set| set.instances.len() == 2,
    )
    .await;

    // The sale, known to both inventories (30 answers in a row through the balancer).
    let sale = api.open_sale(STOCK, 1).await;
    let until = Instant::now() + Duration::from_secs(10);
    let mut in_a_row = 0;
    while in_a_row < 30 {
        assert!(
            Instant::now() < until,
            "the sale never reached both inventories"
        );
        let r = api
            .req(Method::GET, &format!("/api/v1/sales/{sale}"), "10.0.0.1")
            .send()
            .await
            .unwrap();
        in_a_row = if r.status() == StatusCode::OK {
            in_a_row + 1
        } else {
            0
        };
    }
    let tokens: Vec<String> = stream::iter(0..2 * WAVE)
        .map(|n| {
            let api = Arc::clone(&api);
            async move { api.customer(&format!("fo{n}@example.com"), &ip(n)).await }
        })
        .buffered(16)
        .collect()
        .await;
    let wave = |first: usize, answered: Arc<AtomicUsize>| {
        let api = Arc::clone(&api);
        let tokens: Vec<(usize, String)> = tokens[first..first + WAVE]
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, t)| (first + i, t))
            .collect();
        tokio::spawn(async move {
            stream::iter(tokens)
                .map(|(n, token)| {
                    let (api, answered) = (Arc::clone(&api), Arc::clone(&answered));
                    async move {
                        let result = buy_until_answered(&api, sale, &token, &ip(n)).await;
                        answered.fetch_add(1, Ordering::SeqCst);
                        result
                    }
                })
                .buffer_unordered(24)
                .collect::<Vec<_>>()
                .await
        })
    };

    // First wave, 24 buyers at a time; inventory B is killed once a third have their answer.
    let answered = Arc::new(AtomicUsize::new(0));
    let first = wave(0, Arc::clone(&answered));
    // Probed every 5 ms, so the kill comes soon after.
    Eventually::new(
        "a third of the first wave to be answered",
        Duration::from_secs(60),
    )
    .every(Duration::from_millis(5))
    .until(|| async { answered.load(Ordering::SeqCst) >= WAVE / 3 })
    .await;
    inventory_b.start_kill().unwrap();
    let killed_at = Instant::now();
    inventory_b.wait().await.unwrap();
    let evicted_at = loop {
        let set = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("the killed inventory was never evicted")
            .unwrap()
            .unwrap();
        if !set
            .instances
            .iter()
            .any(|i| i.address == inventory_b_addr.to_string())
        {
            assert_eq!(set.instances.len(), 1);
            break Instant::now();
        }
    };
    let ttl = Duration::from_millis(TTL_MS);
    assert!(
        evicted_at - killed_at <= ttl + ttl / 4 + Duration::from_millis(750),
        "evicted {:?} after the kill",
        evicted_at - killed_at
    );
    let mut results = first.await.unwrap();

    // Second wave, after the eviction: not one failure.
    let second = wave(WAVE, Arc::new(AtomicUsize::new(0))).await.unwrap();
    for (log, _) in &second {
        for (_, status) in log {
            assert!(!status.is_server_error(), "{status} after the eviction");
        }
    }
    results.extend(second);
    let mut accepted = HashSet::new();
    for (_, order) in &results {
        if let Some(order) = order {
            assert!(accepted.insert(order.clone()), "an order answered twice");
        }
    }
    // Exactly the stock is sold, and every 202 is stored exactly once.
    assert_eq!(accepted.len(), STOCK as usize);
    let db = flashsale_storage::connect(&database_url, flashsale_storage::Durability::Process, 1)
        .await
        .unwrap();
    let db = &db;
    let stored: HashSet<String> = eventually(
        format!("the {STOCK} orders to be stored"),
        Duration::from_secs(20),
        || async move {
            let rows: Vec<(String,)> = db
                .fetch_all("SELECT id FROM orders WHERE sale_id = ?", &[sale.into()])
                .await
                .unwrap();
            if rows.len() >= STOCK as usize {
                assert_eq!(rows.len(), STOCK as usize, "orders stored");
                Ok(rows.into_iter().map(|(id,)| id).collect())
            } else {
                Err(format!("{} stored", rows.len()))
            }
        },
    )
    .await;
    assert_eq!(stored, accepted);
    crate::common::page_shows_remaining(&api, sale, 0).await;

    for child in [
        &mut gateway,
        &mut order,
        &mut inventory_a,
        &mut auth,
        &mut registry,
    ] {
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
    db.close().await;
    redis.cleanup().await;
}
