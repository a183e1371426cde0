//! Guarantee 3 (no lost acceptance) against a real crash: the `flashsale` binary is rushed,
//! killed with SIGKILL while it is still answering `202`s, and restarted on the same data
//! directory. Every order id it answered `202` for must then exist exactly once, and the stock
//! must add up: `remaining + sold == initial`. With the stock in Redis (which survives the
//! crash, holds and all) the reservations the crash orphaned are given back by the reconciler
//! after the grace period; until then `remaining + sold` may fall short, never exceed.
//!
//! The same crash on PostgreSQL with the NATS JetStream queue, and on MariaDB with the journal
//! and with NATS (databases and streams of the test's own): on restart the inventory counts
//! the requests still in the stream, the consumer drains it, and the sums hold exactly.

use std::{
    collections::HashSet,
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use crate::common::{ip, spawn_binary, Api, ADMIN_EMAIL, ADMIN_PASSWORD};
use flashsale_order::{queue::nats::NatsStream, testing::TestNats};
use flashsale_storage::{testing::TestDatabase, Database, Engine};
use flashsale_testkit::{eventually, Eventually};
use futures::{stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::{process::Child, sync::Mutex};

const USERS: usize = 200;
const STOCK: i64 = 100_000;

/// Starts `flashsale dev` on an ephemeral port and returns it with its gateway address.
async fn start(data_dir: &Path, extra_env: &[(&str, String)]) -> (Child, SocketAddr) {
    let data_dir = data_dir.display().to_string();
    let mut env = vec![
        ("FLASHSALE_ADMIN_EMAIL", ADMIN_EMAIL.into()),
        ("FLASHSALE_ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        // Let every user buy many times: this test is about durability, not limits.
        ("FLASHSALE_GATEWAY__LIMITS__BUY_PER_USER_SALE", "off".into()),
        ("FLASHSALE_GATEWAY__LIMITS__BUY_PER_IP", "off".into()),
    ];
    env.extend_from_slice(extra_env);
    spawn_binary(
        &["dev", "--http", "127.0.0.1:0", "--data-dir", &data_dir],
        &env,
        "flashsale dev: gateway listening on ",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_orders_survive_sigkill() {
    crash_and_restart(&[], Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_orders_survive_sigkill_with_the_stock_in_redis() {
    let Some(redis) = flashsale_redis::testing::TestRedis::start().await else {
        return;
    };
    let env = [
        ("FLASHSALE_REDIS__URL", redis.config.url.clone()),
        (
            "FLASHSALE_REDIS__KEY_PREFIX",
            redis.config.key_prefix.clone(),
        ),
        ("FLASHSALE_INVENTORY__STOCK", "redis".to_owned()),
        // The shortest timing rules Config::check allows: orphans come back after 16 s.
        ("FLASHSALE_ORDER__MAX_ACCEPT_AGE_MS", "1000".to_owned()),
        (
            "FLASHSALE_INVENTORY__RESERVATION_GRACE_MS",
            "16000".to_owned(),
        ),
        (
            "FLASHSALE_INVENTORY__RECONCILE_INTERVAL_MS",
            "500".to_owned(),
        ),
    ];
    crash_and_restart(&env, Duration::from_secs(30)).await;
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_orders_survive_sigkill_on_postgres_with_the_nats_queue() {
    on_server(Engine::Postgres, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_orders_survive_sigkill_on_mariadb() {
    on_server(Engine::MySql, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accepted_orders_survive_sigkill_on_mariadb_with_the_nats_queue() {
    on_server(Engine::MySql, true).await;
}

/// The crash test on a database server (a database of the test's own), with the journal or
/// the NATS queue (a stream of the test's own).
async fn on_server(engine: Engine, nats: bool) {
    let Some((t, guard)) = TestDatabase::start(engine).await else {
        return;
    };
    let mut env = vec![("FLASHSALE_DATABASE_URL", t.url.clone())];
    let nats = if nats {
        let Some(nats) = TestNats::start().await else {
            return;
        };
        let c = &nats.config;
        env.extend([
            ("FLASHSALE_ORDER__QUEUE", "nats".to_owned()),
            ("FLASHSALE_ORDER__NATS__URL", c.url.clone()),
            ("FLASHSALE_ORDER__NATS__STREAM", c.stream.clone()),
            ("FLASHSALE_ORDER__NATS__SUBJECT", c.subject.clone()),
            ("FLASHSALE_ORDER__NATS__DURABLE", c.durable.clone()),
        ]);
        Some(nats)
    } else {
        None
    };
    crash_and_restart_on(&env, Duration::ZERO, Some(&t.db), nats.as_ref()).await;
    if let Some(nats) = nats {
        nats.cleanup().await;
    }
    guard.cleanup().await;
}

/// Rushes, kills, restarts; then every 202 must be stored once, and within `settle` the stock
/// must add up exactly (before that it may fall short, never exceed).
async fn crash_and_restart(env: &[(&str, String)], settle: Duration) {
    crash_and_restart_on(env, settle, None, None).await;
}

/// [`crash_and_restart`] on the database `db` (default: SQLite in the data directory) and,
/// with `nats`, the NATS queue.
async fn crash_and_restart_on(
    env: &[(&str, String)],
    settle: Duration,
    db: Option<&Database>,
    nats: Option<&TestNats>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(dir.path(), env).await;
    let api = Arc::new(Api::new(addr));
    let sale_id = api.open_sale(STOCK, STOCK).await;
    let tokens: Vec<(String, String)> = stream::iter(0..USERS)
        .map(|n| {
            let api = Arc::clone(&api);
            async move {
                (
                    ip(n),
                    api.customer(&format!("crash{n}@example.com"), &ip(n)).await,
                )
            }
        })
        .buffered(32)
        .collect()
        .await;

    // Rush until killed; record every order id answered 202.
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let buyers: Vec<_> = tokens
        .into_iter()
        .map(|(client_ip, token)| {
            let (api, accepted, killed) =
                (Arc::clone(&api), Arc::clone(&accepted), Arc::clone(&killed));
            tokio::spawn(async move {
                let mut n = 0;
                while !killed.load(Ordering::Relaxed) {
                    n += 1;
                    let sent = api
                        .authed(
                            Method::POST,
                            &format!("/api/v1/sales/{sale_id}/orders"),
                            &client_ip,
                            &token,
                        )
                        .header("idempotency-key", format!("{client_ip}-{n}"))
                        .json(&json!({"quantity": 1}))
                        .send()
                        .await;
                    let Ok(r) = sent else { continue };
                    if r.status() == StatusCode::ACCEPTED {
                        if let Ok(body) = r.json::<Value>().await {
                            accepted
                                .lock()
                                .await
                                .insert(body["order_id"].as_str().unwrap().to_owned());
                        }
                    }
                }
            })
        })
        .collect();

    // Kill while 202s are still flowing.
    // Probed every 5 ms, so the kill comes soon after the 500th 202.
    Eventually::new(
        "the rush to get going (500 orders accepted)",
        Duration::from_secs(60),
    )
    .every(Duration::from_millis(5))
    .until(|| async {
        let count = accepted.lock().await.len();
        if count >= 500 {
            Ok(())
        } else {
            Err(format!("{count} accepted"))
        }
    })
    .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    killed.store(true, Ordering::Relaxed);
    for b in buyers {
        b.await.unwrap();
    }
    let accepted = accepted.lock().await.clone();
    assert!(accepted.len() >= 500);

    // Restart on the same data directory: the journal is replayed, stock rebuilt.
    let (mut child, addr) = start(dir.path(), env).await;
    let pool = match db {
        Some(db) => db.clone(),
        None => flashsale_storage::connect(
            &format!("sqlite://{}", dir.path().join("flashsale.db").display()),
            flashsale_storage::Durability::Process,
            1,
        )
        .await
        .unwrap(),
    };
    let stream = match nats {
        Some(nats) => Some(NatsStream::connect(&nats.config).await.unwrap()),
        None => None,
    };
    eventually(
        "the journal to be drained after the restart",
        Duration::from_secs(20),
        || async {
            let (mut queued,): (i64,) = pool
                .fetch_one("SELECT COUNT(*) FROM order_queue", &[])
                .await
                .unwrap();
            if let Some(stream) = &stream {
                queued += stream.queued().await.unwrap().len() as i64;
            }
            if queued == 0 {
                Ok(())
            } else {
                Err(format!("{queued} requests queued"))
            }
        },
    )
    .await;
    let rows: Vec<(String, i64)> = pool
        .fetch_all(
            "SELECT id, quantity FROM orders WHERE sale_id = ?",
            &[sale_id.into()],
        )
        .await
        .unwrap();
    let stored: HashSet<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(stored.len(), rows.len(), "an order id is stored twice");
    let missing: Vec<&String> = accepted.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} orders answered 202 were lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let sold: i64 = rows.iter().map(|(_, q)| q).sum();

    let api = Api::new(addr);
    // Never oversold at any probe; exactly the stock once the reconciler has settled.
    Eventually::new("remaining + sold to add up to the initial stock", settle)
        .every(Duration::from_millis(200))
        .until(|| async {
            let remaining = api.sale(sale_id).await["remaining"].as_i64().unwrap();
            assert!(remaining + sold <= STOCK, "oversold: {remaining} + {sold}");
            if remaining + sold == STOCK {
                Ok(())
            } else {
                Err(format!("{remaining} + {sold}"))
            }
        })
        .await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_stop_writes_every_accepted_order_before_exiting() {
    let app = crate::common::TestApp::spawn_with(|c| {
        c.gateway.limits = flashsale_gateway::config::LimitsConfig::off();
    })
    .await;
    let sale_id = app.open_sale(1000, 1000).await;
    let token = app.customer("drain@example.com", &ip(7)).await;
    let client_ip = ip(7);
    let keys: Vec<String> = (0..200).map(|n| format!("drain-{n}")).collect();
    let buys: Vec<_> = keys
        .iter()
        .map(|key| app.buy(sale_id, &token, &client_ip, key))
        .collect();
    let mut accepted = HashSet::new();
    for r in futures::future::join_all(buys).await {
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        accepted.insert(
            r.json::<serde_json::Value>().await.unwrap()["order_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Stop at once: the order consumer must drain the queue before the app returns.
    let data_dir = app.stop().await;
    let db = format!(
        "sqlite://{}",
        data_dir.path().join("flashsale.db").display()
    );
    let pool = flashsale_storage::connect(&db, flashsale_storage::Durability::Process, 1)
        .await
        .unwrap();
    let (queued,): (i64,) = pool
        .fetch_one("SELECT COUNT(*) FROM order_queue", &[])
        .await
        .unwrap();
    let stored: Vec<(String,)> = pool.fetch_all("SELECT id FROM orders", &[]).await.unwrap();
    assert_eq!(
        queued, 0,
        "requests left in the journal after a graceful stop"
    );
    let stored: HashSet<String> = stored.into_iter().map(|(id,)| id).collect();
    assert_eq!(stored, accepted);
}
