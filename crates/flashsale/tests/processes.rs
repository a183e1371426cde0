//! The services as separate processes (`flashsale serve <service>`), wired by configuration
//! only, serve the same API as `flashsale dev`; each stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{spawn_binary, Api, ADMIN_EMAIL, ADMIN_PASSWORD};
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
