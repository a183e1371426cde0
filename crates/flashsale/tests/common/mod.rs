//! Test harness: spawns the whole system (`flashsale dev` composition) in-process on ephemeral
//! ports with its own data directory ([`TestApp`]), or the real binary ([`spawn_binary`]), and
//! talks to either over real HTTP ([`Api`]).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{net::SocketAddr, sync::Arc};

use flashsale::{config::Config, startup::DevApp};
use flashsale_auth::password::HashParams;
use flashsale_testkit::{eventually, server};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use tokio::{
    sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password";
pub const PASSWORD: &str = "customer-password";

/// The User-Agent the harness sends.
pub const UA: &str = "flashsale-tests";

/// An HTTP client for a running gateway.
pub struct Api {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// The admin's token, logged in once (logins are rate limited per account).
    admin_token: tokio::sync::OnceCell<String>,
    /// The inventory's gRPC address, where the harness knows it: [`remaining`] then asks the
    /// inventory, whose figure is exact the moment a buy is answered (the sale page follows
    /// within the feed interval).
    pub inventory: Option<SocketAddr>,
}

/// Where the shared state of the gateway's limits and auth's sessions lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In process.
    Memory,
    /// In the real Redis, under a key prefix of the test's own.
    Redis,
}

/// A running in-process system and an HTTP client for it.
pub struct TestApp {
    api: Api,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
    pub data_dir: tempfile::TempDir,
    /// The test's Redis, when the app runs on the Redis backends.
    pub redis: Option<flashsale_redis::testing::TestRedis>,
    /// The URL of the app's database.
    pub database_url: String,
    /// Its share of the process (see [`alone_in_process`]), held while it lives.
    _share: Share,
}

/// The in-process apps of this test process: each holds the lock shared, and a test that
/// installs process-wide telemetry holds it exclusively for its whole run. nextest runs every
/// test in a process of its own, so this only matters under plain `cargo test`, where the tests
/// of a binary share one process (and would count into each other's metrics).
static IN_PROCESS: std::sync::LazyLock<Arc<RwLock<()>>> = std::sync::LazyLock::new(Arc::default);

/// This test process to oneself: no other in-process app runs while it is held. Take it before
/// installing anything process-wide (a metrics recorder, a tracing subscriber), and hand it to
/// [`TestApp::spawn_full`].
pub struct AloneInProcess(OwnedRwLockWriteGuard<()>);

/// Waits until no other in-process app runs, and keeps it so (see [`AloneInProcess`]).
pub async fn alone_in_process() -> AloneInProcess {
    AloneInProcess(Arc::clone(&IN_PROCESS).write_owned().await)
}

/// How an app holds the process.
enum Share {
    /// Alongside other apps (telemetry detached).
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    /// Alone (process-wide telemetry installed).
    Alone(#[allow(dead_code)] AloneInProcess),
}

/// A test configuration: cheap password hashing, ephemeral port, the given data directory.
pub fn test_config(data_dir: &std::path::Path) -> Config {
    let mut config = Config {
        data_dir: data_dir.to_path_buf(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        admin_email: Some(ADMIN_EMAIL.into()),
        admin_password: Some(ADMIN_PASSWORD.into()),
        ..Config::default()
    };
    // Tests hash thousands of passwords; the production cost is checked in flashsale-auth.
    config.auth.argon2 = HashParams {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };
    config.gateway.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    // A budget for a loaded 2-core debug build: at the production 500 ms a burst of concurrent
    // buys queueing there comes back 504. It stays below `order.max_accept_age_ms` (10 s), as
    // `Config::check` requires. Tests about budgets and timeouts set their own.
    config.gateway.budget_ms = 5_000;
    config
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_on_with(Backend::Memory, adjust)
            .await
            .expect("the memory backend needs no server")
    }

    /// The system with its sessions and rate limits on `backend`; `None` (the test is skipped,
    /// having said why) when that is Redis and no Redis is reachable outside CI.
    pub async fn spawn_on(backend: Backend) -> Option<Self> {
        Self::spawn_on_with(backend, |_| {}).await
    }

    pub async fn spawn_on_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Option<Self> {
        let shared = Share::Shared(Arc::clone(&IN_PROCESS).read_owned().await);
        Self::spawn_sharing(
            shared,
            backend,
            flashsale::startup::Telemetry::detached(),
            adjust,
        )
        .await
    }

    /// The system on `backend`, handing it `telemetry` installed in the process (a test that
    /// records metrics or spans passes its recorder or span buffer here), with the process to
    /// itself.
    pub async fn spawn_full(
        alone: AloneInProcess,
        backend: Backend,
        telemetry: flashsale::startup::Telemetry,
        adjust: impl FnOnce(&mut Config),
    ) -> Option<Self> {
        Self::spawn_sharing(Share::Alone(alone), backend, telemetry, adjust).await
    }

    async fn spawn_sharing(
        share: Share,
        backend: Backend,
        telemetry: flashsale::startup::Telemetry,
        adjust: impl FnOnce(&mut Config),
    ) -> Option<Self> {
        let redis = match backend {
            Backend::Memory => None,
            Backend::Redis => Some(flashsale_redis::testing::TestRedis::start().await?),
        };
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = test_config(data_dir.path());
        if let Some(redis) = &redis {
            config.redis = flashsale_redis::RedisConfig {
                // Only the URL and the test's prefix: the adjust closure may change the rest.
                ..redis.config.clone()
            };
            config.gateway.limits.backend = flashsale_gateway::config::LimitsBackend::Redis;
            config.auth.sessions = flashsale_auth::config::SessionBackend::Redis;
            config.inventory.stock = flashsale_inventory::config::StockBackend::Redis;
            config.gateway.follow_stock_events = true;
        }
        adjust(&mut config);
        let database_url = config.database_url();
        let app = DevApp::build(config, telemetry).await.unwrap();
        let addr = app.http_addr();
        let inventory = app.inventory_addr();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let handle = tokio::spawn(async move {
            app.run_until_stopped(stop).await.unwrap();
        });
        Some(Self {
            api: Api {
                inventory: Some(inventory),
                ..Api::new(addr)
            },
            shutdown,
            handle: Some(handle),
            data_dir,
            redis,
            database_url,
            _share: share,
        })
    }

    /// Stops the app and deletes whatever it wrote to Redis.
    pub async fn finish(self) {
        let redis = self.redis.clone();
        drop(self.stop().await);
        if let Some(redis) = redis {
            redis.cleanup().await;
        }
    }

    /// Stops the app gracefully, waits for it, and hands over its data directory (deleted when
    /// the returned value is dropped).
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
        std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap())
    }
}

impl TestApp {
    /// The (order id, user id) of every order of `sale` in the app's database, once there are
    /// at least `expected` of them (failing after 20 s, saying how many there were).
    pub async fn stored_orders(&self, sale: i64, expected: usize) -> Vec<(String, i64)> {
        let db = flashsale_storage::connect(
            &self.database_url,
            flashsale_storage::Durability::Process,
            1,
        )
        .await
        .unwrap();
        let db = &db;
        let rows = eventually(
            format!("{expected} orders of sale {sale} to be stored"),
            std::time::Duration::from_secs(20),
            || async move {
                let rows: Vec<(String, i64)> = db
                    .fetch_all(
                        "SELECT id, user_id FROM orders WHERE sale_id = ?",
                        &[sale.into()],
                    )
                    .await
                    .unwrap();
                if rows.len() >= expected {
                    Ok(rows)
                } else {
                    Err(format!("{} stored", rows.len()))
                }
            },
        )
        .await;
        db.close().await;
        rows
    }
}

impl std::ops::Deref for TestApp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Api {
    pub fn new(addr: SocketAddr) -> Self {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(4096)
            .build()
            .unwrap();
        Self {
            addr,
            client,
            admin_token: tokio::sync::OnceCell::new(),
            inventory: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A request from client `ip` (sent as `X-Forwarded-For`, trusted from loopback).
    pub fn req(&self, method: Method, path: &str, ip: &str) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("x-forwarded-for", ip)
            .header("user-agent", "flashsale-tests")
    }

    pub fn authed(&self, method: Method, path: &str, ip: &str, token: &str) -> RequestBuilder {
        self.req(method, path, ip).bearer_auth(token)
    }

    pub async fn register(&self, email: &str, ip: &str) -> Response {
        self.req(Method::POST, "/api/v1/users", ip)
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .unwrap()
    }

    pub async fn login_as(&self, email: &str, password: &str, ip: &str) -> String {
        let r = self
            .req(Method::POST, "/api/v1/sessions", ip)
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "login of {email} failed");
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Registers a customer and logs in from `ip`; returns the token.
    pub async fn customer(&self, email: &str, ip: &str) -> String {
        assert_eq!(
            self.register(email, ip).await.status(),
            StatusCode::ACCEPTED
        );
        self.login_as(email, PASSWORD, ip).await
    }

    /// Registers and logs in customers `buyer0@example.com` … (number `n` from [`ip`]`(n)`), a
    /// few at a time; returns their tokens in order.
    pub async fn customers(&self, count: usize) -> Vec<String> {
        use futures::StreamExt;
        futures::stream::iter(0..count)
            .map(|n| async move {
                self.customer(&format!("buyer{n}@example.com"), &ip(n))
                    .await
            })
            .buffered(32)
            .collect()
            .await
    }

    /// The admin's token (logged in on first use).
    pub async fn admin(&self) -> String {
        self.admin_token
            .get_or_init(|| self.login_as(ADMIN_EMAIL, ADMIN_PASSWORD, "10.255.255.254"))
            .await
            .clone()
    }

    /// A request with an explicit client IP and User-Agent (`req` appends headers, so it
    /// cannot replace them).
    pub fn raw(
        &self,
        method: Method,
        path: &str,
        client_ip: &str,
        user_agent: &str,
    ) -> RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("x-forwarded-for", client_ip)
            .header(reqwest::header::USER_AGENT, user_agent)
    }

    /// `GET /api/v1/orders` with `token`, from `client_ip` and `user_agent`: a cheap
    /// authenticated request.
    pub async fn whoami(&self, token: &str, client_ip: &str, user_agent: &str) -> Response {
        self.raw(Method::GET, "/api/v1/orders", client_ip, user_agent)
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Creates an open sale (started a minute ago, ends in an hour); returns its id.
    pub async fn open_sale(&self, stock: i64, per_user_limit: i64) -> i64 {
        let admin = self.admin().await;
        let now = chrono::Utc::now();
        let r = self
            .authed(
                Method::POST,
                "/api/v1/admin/sales",
                "10.255.255.254",
                &admin,
            )
            .json(&json!({
                "name": "test item",
                "price_cents": 1999,
                "stock": stock,
                "per_user_limit": per_user_limit,
                "starts_at": (now - chrono::Duration::minutes(1)).to_rfc3339(),
                "ends_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    /// One buy attempt.
    pub async fn buy(&self, sale_id: i64, token: &str, ip: &str, key: &str) -> Response {
        self.authed(
            Method::POST,
            &format!("/api/v1/sales/{sale_id}/orders"),
            ip,
            token,
        )
        .header("idempotency-key", key)
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap()
    }

    pub async fn sale(&self, sale_id: i64) -> Value {
        let r = self
            .req(
                Method::GET,
                &format!("/api/v1/sales/{sale_id}"),
                "10.255.255.253",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A distinct client IP for user number `n`.
pub fn ip(n: usize) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

/// The JSON body of a response.
pub async fn body(r: Response) -> Value {
    r.json().await.unwrap()
}

/// A request carrying `text` verbatim as its JSON body.
pub fn with_json(rb: RequestBuilder, text: &str) -> RequestBuilder {
    rb.header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(text.to_owned())
}

/// The stock left in a sale: the inventory's exact figure where the harness knows the
/// inventory, else what the sale page shows (within a feed interval of the truth).
pub async fn remaining(app: &Api, sale: i64) -> i64 {
    if let Some(inventory) = app.inventory {
        let mut client = flashsale::startup::inventory_client(&inventory.to_string()).unwrap();
        let reply = client
            .get_sale(flashsale_proto::inventory::GetSaleRequest { id: sale })
            .await
            .unwrap()
            .into_inner();
        return reply.sale.expect("the sale exists").remaining;
    }
    app.sale(sale).await["remaining"].as_i64().unwrap()
}

/// Waits until the sale page shows `expected` units left (the page follows the inventory's
/// feed, within a tenth of a second).
pub async fn page_shows_remaining(app: &Api, sale: i64, expected: i64) {
    flashsale_testkit::eventually(
        format!("sale {sale}'s page shows {expected} left"),
        std::time::Duration::from_secs(10),
        || async { app.sale(sale).await["remaining"].as_i64() == Some(expected) },
    )
    .await;
}

/// Asserts a `202` buy answer and returns its order id.
pub async fn accepted(r: Response) -> String {
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let b = body(r).await;
    assert_eq!(b["status"], "pending", "{b}");
    let id = b["order_id"].as_str().unwrap().to_owned();
    uuid::Uuid::parse_str(&id).expect("order_id is a UUID");
    id
}

/// Asserts a `401 unauthorized` JSON error.
pub async fn assert_unauthorized(r: Response) {
    assert_eq!(
        error_code(r, StatusCode::UNAUTHORIZED).await,
        "unauthorized"
    );
}

/// Asserts the JSON error shape and returns its code.
pub async fn error_code(r: Response, status: StatusCode) -> String {
    assert_eq!(r.status(), status);
    let body: Value = r.json().await.unwrap();
    let err = &body["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        err["request_id"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    err["code"].as_str().unwrap().to_owned()
}

/// Starts the real `flashsale` binary with `args` and `env`, and waits for the line
/// `<ready_prefix><address>` on its stdout. Its stdout keeps being drained afterwards.
pub async fn spawn_binary(
    args: &[&str],
    env: &[(&str, String)],
    ready_prefix: &str,
) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::AsyncBufReadExt;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_flashsale"));
    command
        .args(args)
        .env("FLASHSALE_LOG", "warn")
        .env("FLASHSALE_AUTH__ARGON2__MEMORY_KIB", "256")
        .env("FLASHSALE_AUTH__ARGON2__ITERATIONS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let prefix = ready_prefix.to_owned();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix(&prefix) {
                return addr
                    .trim_start_matches("http://")
                    .parse::<SocketAddr>()
                    .unwrap();
            }
        }
        panic!("flashsale {args:?} exited before it was ready");
    })
    .await
    .expect("flashsale did not start in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// `GET /metrics` of a process (the gateway's HTTP port, or a gRPC service's port, which also
/// answers HTTP/1.1).
pub async fn scrape(addr: SocketAddr) -> String {
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET /metrics on {addr}");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    r.text().await.unwrap()
}

/// Checks an exposition with `promtool check metrics` (Debian's `prometheus` package): format
/// errors and lint problems (missing HELP, counters without `_total`, bad units) fail the
/// test. Without promtool the test kit's rule applies: the check is skipped, saying so, except
/// under `CI=true`.
pub async fn promtool_check(what: &str, exposition: &str) {
    use tokio::io::AsyncWriteExt;
    let spawned = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Some(mut child) = server::required(
        &format!("promtool (to check the metrics of {what})"),
        spawned,
        "apt-get install prometheus; .ci/run installs it",
    ) else {
        return;
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(exposition.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed for {what}:\n{}{}\n--- exposition ---\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The registry's pushed view of `service` (one `InstanceSet` per change).
pub async fn watch_registry(
    registry: &str,
    service: &str,
) -> tonic::Streaming<flashsale_proto::registry::InstanceSet> {
    use flashsale_proto::registry::{registry_client::RegistryClient, WatchRequest};
    RegistryClient::new(flashsale_registry::lazy_channel(registry).unwrap())
        .watch(WatchRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The first set `watch` pushes that satisfies `done`; fails with `what` after `within`.
pub async fn next_set_where(
    watch: &mut tonic::Streaming<flashsale_proto::registry::InstanceSet>,
    within: std::time::Duration,
    what: &str,
    done: impl Fn(&flashsale_proto::registry::InstanceSet) -> bool,
) -> flashsale_proto::registry::InstanceSet {
    let until = tokio::time::Instant::now() + within;
    loop {
        let set = tokio::time::timeout_at(until, watch.message())
            .await
            .unwrap_or_else(|_| panic!("{what}"))
            .unwrap()
            .unwrap();
        if done(&set) {
            return set;
        }
    }
}
