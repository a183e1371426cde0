//! The services as separate processes (`flashsale serve <service>`), wired by configuration
//! only, serve the same API as `flashsale dev`; each stops cleanly on SIGTERM. Several gateways
//! and auth instances share their limits and sessions through Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{ip, spawn_binary, Api, ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::Value;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_serve_a_sale_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("flashsale.db").display());
    let secret = "an-integration-test-secret-of-32-bytes-or-more".to_owned();
    let common_env = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("FLASHSALE_DATABASE_URL", db.clone()),
            ("FLASHSALE_JWT_SECRET", secret.clone()),
        ];
        env.extend_from_slice(extra);
        env
    };

    let (auth, auth_addr) = spawn_binary(
        &["serve", "auth"],
        &common_env(&[
            ("FLASHSALE_SERVICES__AUTH", "127.0.0.1:0".into()),
            ("FLASHSALE_ADMIN_EMAIL", ADMIN_EMAIL.into()),
            ("FLASHSALE_ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ]),
        "flashsale serve Auth: listening on ",
    )
    .await;
    let (inventory, inventory_addr) = spawn_binary(
        &["serve", "inventory"],
        &common_env(&[("FLASHSALE_SERVICES__INVENTORY", "127.0.0.1:0".into())]),
        "flashsale serve Inventory: listening on ",
    )
    .await;
    let (order, order_addr) = spawn_binary(
        &["serve", "order"],
        &common_env(&[
            ("FLASHSALE_SERVICES__ORDER", "127.0.0.1:0".into()),
            ("FLASHSALE_SERVICES__INVENTORY", inventory_addr.to_string()),
        ]),
        "flashsale serve Order: listening on ",
    )
    .await;
    let gateway_env = common_env(&[
        ("FLASHSALE_HTTP_ADDR", "127.0.0.1:0".into()),
        ("FLASHSALE_SERVICES__AUTH", auth_addr.to_string()),
        ("FLASHSALE_SERVICES__INVENTORY", inventory_addr.to_string()),
        ("FLASHSALE_SERVICES__ORDER", order_addr.to_string()),
    ]);
    let ready = "flashsale serve Gateway: listening on ";
    let (gateway, http) = spawn_binary(&["serve", "gateway"], &gateway_env, ready).await;
    let (second_gateway, second_http) =
        spawn_binary(&["serve", "gateway"], &gateway_env, ready).await;

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
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
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
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order never persisted: {order}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(api.sale(sale_id).await["remaining"], 0);

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
    let logged_out = tokio::time::Instant::now();
    loop {
        let status = on_second().await.unwrap().status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            logged_out.elapsed() < Duration::from_secs(1),
            "the second gateway still accepts a revoked token after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
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
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("flashsale.db").display());
    let env = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("FLASHSALE_DATABASE_URL", db.clone()),
            (
                "FLASHSALE_JWT_SECRET",
                "an-integration-test-secret-of-32-bytes-or-more".to_owned(),
            ),
            ("FLASHSALE_REDIS__URL", redis.config.url.clone()),
            (
                "FLASHSALE_REDIS__KEY_PREFIX",
                redis.config.key_prefix.clone(),
            ),
            ("FLASHSALE_AUTH__SESSIONS", "redis".to_owned()),
            ("FLASHSALE_GATEWAY__LIMITS__BACKEND", "redis".to_owned()),
        ];
        env.extend_from_slice(extra);
        env
    };
    // Two auth instances on one Redis (the first also creates the admin).
    let (auth_a, auth_a_addr) = spawn_binary(
        &["serve", "auth"],
        &env(&[
            ("FLASHSALE_SERVICES__AUTH", "127.0.0.1:0".into()),
            ("FLASHSALE_ADMIN_EMAIL", ADMIN_EMAIL.into()),
            ("FLASHSALE_ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ]),
        "flashsale serve Auth: listening on ",
    )
    .await;
    let (auth_b, auth_b_addr) = spawn_binary(
        &["serve", "auth"],
        &env(&[("FLASHSALE_SERVICES__AUTH", "127.0.0.1:0".into())]),
        "flashsale serve Auth: listening on ",
    )
    .await;
    let (inventory, inventory_addr) = spawn_binary(
        &["serve", "inventory"],
        &env(&[("FLASHSALE_SERVICES__INVENTORY", "127.0.0.1:0".into())]),
        "flashsale serve Inventory: listening on ",
    )
    .await;
    let (order, order_addr) = spawn_binary(
        &["serve", "order"],
        &env(&[
            ("FLASHSALE_SERVICES__ORDER", "127.0.0.1:0".into()),
            ("FLASHSALE_SERVICES__INVENTORY", inventory_addr.to_string()),
        ]),
        "flashsale serve Order: listening on ",
    )
    .await;
    // Gateway A talks to auth A, gateway B to auth B. No trusted proxy: every test client is
    // 127.0.0.1 whatever its X-Forwarded-For says.
    let gateway = |auth_addr: std::net::SocketAddr| {
        env(&[
            ("FLASHSALE_HTTP_ADDR", "127.0.0.1:0".into()),
            ("FLASHSALE_SERVICES__AUTH", auth_addr.to_string()),
            ("FLASHSALE_SERVICES__INVENTORY", inventory_addr.to_string()),
            ("FLASHSALE_SERVICES__ORDER", order_addr.to_string()),
        ])
    };
    let ready = "flashsale serve Gateway: listening on ";
    let (gw_a, http_a) = spawn_binary(&["serve", "gateway"], &gateway(auth_a_addr), ready).await;
    let (gw_b, http_b) = spawn_binary(&["serve", "gateway"], &gateway(auth_b_addr), ready).await;
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
    assert_eq!(
        a.sale(sale_id).await["remaining"],
        100 - i64::try_from(passed).unwrap()
    );

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
    let logged_out = tokio::time::Instant::now();
    loop {
        let status = on_b().await.unwrap().status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            logged_out.elapsed() < Duration::from_secs(1),
            "gateway B still accepts a token revoked through A after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for child in [gw_b, gw_a, order, inventory, auth_b, auth_a] {
        sigterm_and_wait(child).await;
    }
    redis.cleanup().await;
}
