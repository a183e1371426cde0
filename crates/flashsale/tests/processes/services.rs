//! The services as separate processes (`flashsale serve <service>`), wired by configuration
//! only, serve the same API as `flashsale dev`; each stops cleanly on SIGTERM. Several gateways
//! and auth instances share their limits and sessions through Redis.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use crate::common::{
    ip, promtool_check, scrape, spawn_binary, Api, ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD,
};
use flashsale_testkit::eventually;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::process::Child;

async fn sigterm_and_wait(mut child: tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("did not stop after SIGTERM")
        .unwrap();
    assert!(status.success(), "exited with {status}");
}

/// One deployment of separate `flashsale serve` processes: a shared database, signing secret
/// and any further settings, each service started on an ephemeral port.
struct Deployment {
    env: Vec<(&'static str, String)>,
    database_url: String,
    _dir: tempfile::TempDir,
}

impl Deployment {
    fn new(extra: &[(&'static str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database_url = format!("sqlite://{}", dir.path().join("flashsale.db").display());
        let mut env = vec![
            ("FLASHSALE_DATABASE_URL", database_url.clone()),
            (
                "FLASHSALE_JWT_SECRET",
                "an-integration-test-secret-of-32-bytes-or-more".to_owned(),
            ),
        ];
        env.extend_from_slice(extra);
        Self {
            env,
            database_url,
            _dir: dir,
        }
    }

    /// Settings that put sessions, limits and stock in the test's Redis.
    fn on_redis(redis: &flashsale_redis::testing::TestRedis) -> Vec<(&'static str, String)> {
        vec![
            ("FLASHSALE_REDIS__URL", redis.config.url.clone()),
            (
                "FLASHSALE_REDIS__KEY_PREFIX",
                redis.config.key_prefix.clone(),
            ),
            ("FLASHSALE_AUTH__SESSIONS", "redis".to_owned()),
            ("FLASHSALE_GATEWAY__LIMITS__BACKEND", "redis".to_owned()),
            ("FLASHSALE_INVENTORY__STOCK", "redis".to_owned()),
        ]
    }

    async fn spawn(&self, service: &str, extra: &[(&'static str, String)]) -> (Child, SocketAddr) {
        let mut env = self.env.clone();
        env.extend_from_slice(extra);
        // The ready line names the service capitalised: "flashsale serve Auth: listening on".
        let name = format!("{}{}", service[..1].to_uppercase(), &service[1..]);
        let ready = format!("flashsale serve {name}: listening on ");
        spawn_binary(&["serve", service], &env, &ready).await
    }

    /// An auth process; `admin` also creates the test admin.
    async fn auth(&self, admin: bool) -> (Child, SocketAddr) {
        let mut env = vec![("FLASHSALE_SERVICES__AUTH", "127.0.0.1:0".to_owned())];
        if admin {
            env.push(("FLASHSALE_ADMIN_EMAIL", ADMIN_EMAIL.into()));
            env.push(("FLASHSALE_ADMIN_PASSWORD", ADMIN_PASSWORD.into()));
        }
        self.spawn("auth", &env).await
    }

    async fn inventory(&self) -> (Child, SocketAddr) {
        self.spawn(
            "inventory",
            &[("FLASHSALE_SERVICES__INVENTORY", "127.0.0.1:0".into())],
        )
        .await
    }

    async fn order(&self, inventory: SocketAddr) -> (Child, SocketAddr) {
        self.spawn(
            "order",
            &[
                ("FLASHSALE_SERVICES__ORDER", "127.0.0.1:0".into()),
                ("FLASHSALE_SERVICES__INVENTORY", inventory.to_string()),
            ],
        )
        .await
    }

    /// A gateway with no trusted proxy: every test client is 127.0.0.1, whatever its
    /// X-Forwarded-For says.
    async fn gateway(
        &self,
        auth: SocketAddr,
        inventory: SocketAddr,
        order: SocketAddr,
    ) -> (Child, SocketAddr) {
        self.spawn(
            "gateway",
            &[
                ("FLASHSALE_HTTP_ADDR", "127.0.0.1:0".into()),
                ("FLASHSALE_SERVICES__AUTH", auth.to_string()),
                ("FLASHSALE_SERVICES__INVENTORY", inventory.to_string()),
                ("FLASHSALE_SERVICES__ORDER", order.to_string()),
            ],
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_serve_a_sale_end_to_end() {
    let deployment = Deployment::new(&[]);
    let (auth, auth_addr) = deployment.auth(true).await;
    let (inventory, inventory_addr) = deployment.inventory().await;
    let (order, order_addr) = deployment.order(inventory_addr).await;
    let (gateway, http) = deployment
        .gateway(auth_addr, inventory_addr, order_addr)
        .await;
    let (second_gateway, second_http) = deployment
        .gateway(auth_addr, inventory_addr, order_addr)
        .await;

    // No trusted proxy in `serve` mode: every test client is 127.0.0.1, whatever it claims.
    let api = Api::new(http);
    let sale_id = api.open_sale(1, 1).await;
    let buyer = api.customer("multi@example.com", "10.0.0.1").await;
    let r = api.buy(sale_id, &buyer, "10.0.0.1", "only-one").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let order_id = r.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let again = api.buy(sale_id, &buyer, "10.0.0.1", "another").await;
    assert_eq!(
        again.status(),
        StatusCode::CONFLICT,
        "stock of 1 sold twice"
    );

    // The order service persists it, and the inventory shows the stock taken.
    eventually(
        format!("order {order_id} to be persisted"),
        Duration::from_secs(10),
        || async {
            let order: Value = api
                .authed(
                    Method::GET,
                    &format!("/api/v1/orders/{order_id}"),
                    "10.0.0.1",
                    &buyer,
                )
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if order["status"] == "created" {
                Ok(())
            } else {
                Err(order)
            }
        },
    )
    .await;
    crate::common::page_shows_remaining(&api, sale_id, 0).await;

    // A logout on one gateway is honoured by the other within a second, although the other
    // has the session cached (it served this user a moment ago).
    let second = Api::new(second_http);
    let orders_path = "/api/v1/orders";
    let on_second = || {
        second
            .authed(Method::GET, orders_path, "10.0.0.1", &buyer)
            .send()
    };
    assert_eq!(on_second().await.unwrap().status(), StatusCode::OK);
    let logout = api
        .authed(
            Method::DELETE,
            "/api/v1/sessions/current",
            "10.0.0.1",
            &buyer,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    eventually(
        "the second gateway to refuse a revoked token (for 1 s at most)",
        Duration::from_secs(1),
        || async {
            let status = on_second().await.unwrap().status();
            assert!(
                status == StatusCode::OK || status == StatusCode::UNAUTHORIZED,
                "{status}"
            );
            status == StatusCode::UNAUTHORIZED
        },
    )
    .await;

    // Every process serves its own metrics: valid exposition, and each counts its own calls.
    let expect = [
        (auth_addr, "auth", "flashsale.auth.v1.Auth/Login"),
        (
            inventory_addr,
            "inventory",
            "flashsale.inventory.v1.Inventory/Reserve",
        ),
        (order_addr, "order", "flashsale.order.v1.Orders/Submit"),
    ];
    for (addr, service, method) in expect {
        let exposition = scrape(addr).await;
        promtool_check(service, &exposition).await;
        assert!(
            exposition.contains(&format!(
                "flashsale_grpc_requests_total{{method=\"{method}\",code=\"OK\"}}"
            )),
            "{service} does not count {method}:\n{exposition}"
        );
        assert!(exposition.contains("flashsale_grpc_request_duration_seconds_bucket"));
    }
    let inventory_metrics = scrape(inventory_addr).await;
    assert!(
        inventory_metrics.contains(&format!(
            "flashsale_stock_remaining{{sale=\"{sale_id}\"}} 0"
        )),
        "{inventory_metrics}"
    );
    assert!(scrape(order_addr)
        .await
        .contains("flashsale_orders_persisted_total 1"));
    let gateway_metrics = scrape(http).await;
    promtool_check("gateway", &gateway_metrics).await;
    for line in [
        format!("flashsale_buy_outcomes_total{{outcome=\"accepted\",sale=\"{sale_id}\"}} 1"),
        // The second buy: refused by the inventory, or locally once the gateway knew.
        "flashsale_buy_outcomes_total{outcome=\"sold_out".to_owned(),
        // A gateway of its own process sends its buys over gRPC, alone or batched.
        "flashsale_gateway_call_batch_size_count{call=\"reserve\"}".to_owned(),
        "flashsale_gateway_call_batch_size_count{call=\"submit\"}".to_owned(),
    ] {
        assert!(
            gateway_metrics.contains(&line),
            "{line} in {gateway_metrics}"
        );
    }

    for child in [second_gateway, gateway, order, inventory, auth] {
        sigterm_and_wait(child).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_and_auth_instances_share_limits_and_sessions_through_redis() {
    let Some(redis) = flashsale_redis::testing::TestRedis::start().await else {
        return;
    };
    let deployment = Deployment::new(&Deployment::on_redis(&redis));
    // Two auth instances on one Redis (the first also creates the admin); gateway A talks to
    // auth A, gateway B to auth B.
    let (auth_a, auth_a_addr) = deployment.auth(true).await;
    let (auth_b, auth_b_addr) = deployment.auth(false).await;
    let (inventory, inventory_addr) = deployment.inventory().await;
    let (order, order_addr) = deployment.order(inventory_addr).await;
    let (gw_a, http_a) = deployment
        .gateway(auth_a_addr, inventory_addr, order_addr)
        .await;
    let (gw_b, http_b) = deployment
        .gateway(auth_b_addr, inventory_addr, order_addr)
        .await;
    let (a, b) = (Api::new(http_a), Api::new(http_b));

    let sale_id = a.open_sale(100, 2).await;
    // Six shoppers, each claiming an address of their own (ignored: the peer is untrusted).
    let mut shoppers = Vec::new();
    for n in 0..6 {
        let email = format!("shared{n}@example.com");
        assert_eq!(
            a.register(&email, &ip(n)).await.status(),
            StatusCode::ACCEPTED
        );
        // Logged in through either gateway; the session lives in Redis.
        let via = if n % 2 == 0 { &a } else { &b };
        shoppers.push(via.login_as(&email, PASSWORD, &ip(n)).await);
    }
    // Every token works on both gateways (each asks its own auth instance, both read Redis).
    for token in &shoppers {
        for api in [&a, &b] {
            let r = api
                .authed(Method::GET, "/api/v1/orders", "10.0.0.1", token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
    }

    // Twelve buys alternating between the gateways: the one address (127.0.0.1) has 10 a
    // minute in total, not 10 per gateway and not 10 per claimed address.
    let started = tokio::time::Instant::now();
    let mut statuses = Vec::new();
    for round in 0..2 {
        for (n, token) in shoppers.iter().enumerate() {
            let via = if (n + round) % 2 == 0 { &a } else { &b };
            let r = via.buy(sale_id, token, &ip(n), &format!("k{round}")).await;
            statuses.push(r.status());
        }
    }
    let passed = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    // GCRA: a burst of 10, then one more per 6 s the attempts took.
    let refills = usize::try_from(started.elapsed().as_secs() / 6).unwrap();
    assert!(
        passed >= 10 && passed <= 10 + refills && passed + limited == 12,
        "{statuses:?}"
    );
    crate::common::page_shows_remaining(&a, sale_id, 100 - i64::try_from(passed).unwrap()).await;

    // Logout through gateway A (auth A) is honoured by gateway B (auth B) within a second.
    let token = &shoppers[1];
    let on_b = || {
        b.authed(Method::GET, "/api/v1/orders", "10.0.0.1", token)
            .send()
    };
    assert_eq!(on_b().await.unwrap().status(), StatusCode::OK);
    let r = a
        .authed(
            Method::DELETE,
            "/api/v1/sessions/current",
            "10.0.0.1",
            token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    eventually(
        "gateway B to refuse a token revoked through A (for 1 s at most)",
        Duration::from_secs(1),
        || async {
            let status = on_b().await.unwrap().status();
            assert!(
                status == StatusCode::OK || status == StatusCode::UNAUTHORIZED,
                "{status}"
            );
            status == StatusCode::UNAUTHORIZED
        },
    )
    .await;

    for child in [gw_b, gw_a, order, inventory, auth_b, auth_a] {
        sigterm_and_wait(child).await;
    }
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_inventory_processes_on_one_redis_sell_exactly_the_stock() {
    use futures::{stream, StreamExt};

    let Some(redis) = flashsale_redis::testing::TestRedis::start().await else {
        return;
    };
    let mut settings = Deployment::on_redis(&redis);
    settings.extend([
        ("FLASHSALE_INVENTORY__CATALOG_REFRESH_MS", "100".to_owned()),
        // Every test client is 127.0.0.1 here (no trusted proxy): limits would only measure
        // that. This test is about the stock.
        ("FLASHSALE_GATEWAY__LIMITS__BUY_PER_IP", "off".to_owned()),
        (
            "FLASHSALE_GATEWAY__LIMITS__BUY_PER_USER_SALE",
            "off".to_owned(),
        ),
        ("FLASHSALE_GATEWAY__LIMITS__LOGIN_PER_IP", "off".to_owned()),
        (
            "FLASHSALE_GATEWAY__LIMITS__REGISTER_PER_IP",
            "off".to_owned(),
        ),
        ("FLASHSALE_GATEWAY__BUDGET_MS", "5000".to_owned()),
        ("FLASHSALE_GATEWAY__FOLLOW_STOCK_EVENTS", "true".to_owned()),
        // Pushed sold-outs believed long enough for this test's slowest machine.
        ("FLASHSALE_GATEWAY__PUSHED_SOLD_OUT_MS", "60000".to_owned()),
        // Sold-outs a gateway was answered are not kept: a local answer is a pushed one.
        ("FLASHSALE_GATEWAY__SOLD_OUT_CACHE_MS", "0".to_owned()),
    ]);
    let deployment = Deployment::new(&settings);
    let (auth, auth_addr) = deployment.auth(true).await;
    // Two inventories on one Redis stock; gateway A talks to inventory A, gateway B to B.
    let (inv_a, inv_a_addr) = deployment.inventory().await;
    let (inv_b, inv_b_addr) = deployment.inventory().await;
    let (order, order_addr) = deployment.order(inv_a_addr).await;
    let (gw_a, http_a) = deployment.gateway(auth_addr, inv_a_addr, order_addr).await;
    let (gw_b, http_b) = deployment.gateway(auth_addr, inv_b_addr, order_addr).await;
    // Gateway C (also on inventory B) takes no part in the rush: it only hears the stock events.
    let (gw_c, http_c) = deployment.gateway(auth_addr, inv_b_addr, order_addr).await;
    let apis = Arc::new([Api::new(http_a), Api::new(http_b), Api::new(http_c)]);

    // The sale is created through inventory A; inventory B learns it from the catalog (and
    // gateways B and C learn it from inventory B).
    let sale_id = apis[0].open_sale(50, 2).await;
    let learned = tokio::time::Instant::now() + Duration::from_secs(10);
    for api in &apis[1..] {
        eventually(
            format!("inventory B to learn sale {sale_id} (through {})", api.addr),
            learned.saturating_duration_since(tokio::time::Instant::now()),
            || async {
                let r = api
                    .req(Method::GET, &format!("/api/v1/sales/{sale_id}"), "10.0.0.1")
                    .send()
                    .await
                    .unwrap();
                if r.status() == StatusCode::OK {
                    Ok(())
                } else {
                    Err(r.status())
                }
            },
        )
        .await;
    }

    // 60 shoppers × 3 keys, alternating gateways (so inventories), 32 at a time.
    let tokens: Vec<String> = stream::iter(0..60)
        .map(|n| {
            let apis = Arc::clone(&apis);
            async move {
                apis[0]
                    .customer(&format!("two{n}@example.com"), &ip(n))
                    .await
            }
        })
        .buffered(16)
        .collect()
        .await;
    let answers: Vec<(usize, StatusCode, Option<String>)> = stream::iter(
        tokens
            .clone()
            .into_iter()
            .enumerate()
            .flat_map(|(n, t)| (0..3).map(move |k| (n, t.clone(), k))),
    )
    .map(|(n, token, k)| {
        let apis = Arc::clone(&apis);
        async move {
            let api = &apis[(n + k) % 2];
            let r = api.buy(sale_id, &token, &ip(n), &format!("key-{k}")).await;
            let status = r.status();
            let body: Value = r.json().await.unwrap();
            let order = (status == StatusCode::ACCEPTED)
                .then(|| body["order_id"].as_str().unwrap().to_owned());
            (n, status, order)
        }
    })
    .buffer_unordered(32)
    .collect()
    .await;
    let accepted: Vec<&(usize, StatusCode, Option<String>)> =
        answers.iter().filter(|a| a.2.is_some()).collect();
    assert!(
        answers
            .iter()
            .all(|a| a.1 == StatusCode::ACCEPTED || a.1 == StatusCode::CONFLICT),
        "{:?}",
        answers.iter().map(|a| a.1).collect::<Vec<_>>()
    );
    assert_eq!(
        accepted.len(),
        50,
        "exactly the stock, across two inventories"
    );
    let mut per_user = std::collections::HashMap::<usize, usize>::new();
    for a in &accepted {
        *per_user.entry(a.0).or_default() += 1;
    }
    assert!(per_user.values().all(|n| *n <= 2));
    for api in apis.iter() {
        crate::common::page_shows_remaining(api, sale_id, 0).await;
    }
    // And the database holds exactly those orders.
    let pool = flashsale_storage::connect(
        &deployment.database_url,
        flashsale_storage::Durability::Process,
        1,
    )
    .await
    .unwrap();
    let pool = &pool;
    eventually(
        "the 50 orders of the sale to be stored",
        Duration::from_secs(10),
        || async move {
            let (stored,): (i64,) = pool
                .fetch_one(
                    "SELECT COUNT(*) FROM orders WHERE sale_id = ?",
                    &[sale_id.into()],
                )
                .await
                .unwrap();
            assert!(stored <= 50, "{stored} orders for a stock of 50");
            if stored == 50 {
                Ok(())
            } else {
                Err(format!("{stored} stored"))
            }
        },
    )
    .await;

    // Gateway C took no part in the rush, yet answers the sale sold out by itself: with
    // `sold_out_cache_ms = 0` a gateway never keeps a sold-out it was *answered*, so a local
    // answer (`sold_out_local`) can only come from the sold-out event inventory B streamed to it
    // (relayed from the Redis channel every inventory's scripts publish on).
    let (n, _, order_id) = accepted[0];
    let order_id = order_id.clone().unwrap();
    let ip_59 = ip(59);
    let buy_via_c = |key: &'static str| apis[2].buy(sale_id, &tokens[59], &ip_59, key);
    let r = buy_via_c("after-sold-out").await;
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "{}",
        r.text().await.unwrap()
    );
    let local_answers = |text: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with("flashsale_buy_outcomes_total{")
                    && l.contains("outcome=\"sold_out_local\"")
                    && l.contains(&format!("sale=\"{sale_id}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let metrics_c = scrape(http_c).await;
    assert!(
        local_answers(&metrics_c) >= 1.0,
        "gateway C answered from the pushed sold-out:\n{metrics_c}"
    );
    // A cancelled order gives a unit back; the restock event clears C's flag at once (it would
    // otherwise hold for `pushed_sold_out_ms`, a minute), so C's next buy reaches inventory B
    // and gets the unit.
    let r = apis[0]
        .authed(
            Method::POST,
            &format!("/api/v1/orders/{order_id}/cancel"),
            &ip(*n),
            &tokens[*n],
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    eventually(
        "gateway C to hear the restock and buy the unit given back",
        Duration::from_secs(5),
        || async {
            let status = buy_via_c("after-restock").await.status();
            if status == StatusCode::ACCEPTED {
                Ok(())
            } else {
                assert_eq!(status, StatusCode::CONFLICT);
                Err(status)
            }
        },
    )
    .await;

    for child in [gw_c, gw_b, gw_a, order, inv_b, inv_a, auth] {
        sigterm_and_wait(child).await;
    }
    redis.cleanup().await;
}
