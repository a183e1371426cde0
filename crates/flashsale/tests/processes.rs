//! The services as separate processes (`flashsale serve <service>`), wired by configuration
//! only, serve the same API as `flashsale dev`; each stops cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::Duration;

use common::{spawn_binary, ADMIN_EMAIL, ADMIN_PASSWORD, PASSWORD};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

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
    let (gateway, http) = spawn_binary(
        &["serve", "gateway"],
        &common_env(&[
            ("FLASHSALE_HTTP_ADDR", "127.0.0.1:0".into()),
            ("FLASHSALE_SERVICES__AUTH", auth_addr.to_string()),
            ("FLASHSALE_SERVICES__INVENTORY", inventory_addr.to_string()),
            ("FLASHSALE_SERVICES__ORDER", order_addr.to_string()),
        ]),
        "flashsale serve Gateway: listening on ",
    )
    .await;

    let base = format!("http://{http}/api/v1");
    let client = Client::new();
    let login = |email: &'static str, password: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let r = client
                .post(format!("{base}/sessions"))
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let admin = login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let now = chrono::Utc::now();
    let sale: Value = client
        .post(format!("{base}/admin/sales"))
        .bearer_auth(&admin)
        .json(&json!({
            "name": "multi-process item", "price_cents": 500, "stock": 1, "per_user_limit": 1,
            "starts_at": (now - chrono::Duration::minutes(1)).to_rfc3339(),
            "ends_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sale_id = sale["id"].as_i64().unwrap();

    let r = client
        .post(format!("{base}/users"))
        .json(&json!({"email": "multi@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let buyer = login("multi@example.com", PASSWORD).await;
    let buy = |key: &'static str| {
        client
            .post(format!("{base}/sales/{sale_id}/orders"))
            .bearer_auth(&buyer)
            .header("idempotency-key", key)
            .send()
    };
    let r = buy("only-one").await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let order_id = r.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        buy("another").await.unwrap().status(),
        StatusCode::CONFLICT,
        "stock of 1 sold twice"
    );

    // The order service persists it, and the inventory shows the stock taken.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let order: Value = client
            .get(format!("{base}/orders/{order_id}"))
            .bearer_auth(&buyer)
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
    let sale: Value = client
        .get(format!("{base}/sales/{sale_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sale["remaining"], 0);

    for child in [gateway, order, inventory, auth] {
        sigterm_and_wait(child).await;
    }
}
