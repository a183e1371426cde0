//! `flashsale inventory reconcile` against a running `flashsale serve inventory` (the real
//! binary, its real database): drift injected into the database is reported by a dry run (exit
//! code 2, nothing changed), repaired by a real run, and then reported clean; an unknown sale is
//! an error.

use std::time::Duration;

use crate::common::spawn_binary;
use flashsale_proto::inventory::{
    inventory_client::InventoryClient, CreateSaleRequest, GetSaleRequest,
};
use flashsale_storage::now_ms;

/// Runs `flashsale inventory reconcile --addr <addr> <args>`: exit code and stdout + stderr.
async fn reconcile(addr: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .args(["inventory", "reconcile", "--addr", addr])
        .args(args)
        .env("FLASHSALE_LOG", "warn")
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_then_repairs_drift() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("flashsale.db").display());
    let env = [
        ("FLASHSALE_DATABASE_URL", database_url.clone()),
        (
            "FLASHSALE_JWT_SECRET",
            "an-integration-test-secret-of-32-bytes-or-more".to_owned(),
        ),
        ("FLASHSALE_SERVICES__INVENTORY", "127.0.0.1:0".to_owned()),
    ];
    let (mut child, addr) = spawn_binary(
        &["serve", "inventory"],
        &env,
        "flashsale serve Inventory: listening on ",
    )
    .await;
    let addr = addr.to_string();
    let mut client = InventoryClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let now = now_ms();
    let sale = client
        .create_sale(CreateSaleRequest {
            name: "item".into(),
            price_cents: 100,
            stock: 10,
            per_user_limit: 3,
            starts_at_ms: now - 1_000,
            ends_at_ms: now + 3_600_000,
        })
        .await
        .unwrap()
        .into_inner();
    let remaining = |mut client: InventoryClient<_>| async move {
        client
            .get_sale(GetSaleRequest { id: sale.id })
            .await
            .unwrap()
            .into_inner()
            .sale
            .unwrap()
            .remaining
    };

    // Drift: the journal holds an order of 2 units the stock backend never took.
    let pool = flashsale_storage::connect(&database_url, flashsale_storage::Durability::Process, 1)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO order_queue (order_id, user_id, sale_id, quantity, price_cents, idempotency_key, accepted_at_ms)
         VALUES (?, 7, ?, 2, 100, 'k', ?)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(sale.id)
    .bind(now)
    .execute(pool.as_sqlite().expect("the test runs on SQLite"))
    .await
    .unwrap();

    let drift = format!("sale {}: DRIFT remaining 10 -> 8; holds adopted 1, released 0, voided 0; held units fixed: none; conflicts 0", sale.id);
    let (code, out, err) = reconcile(&addr, &["--dry-run"]).await;
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.starts_with("dry run: nothing was changed"), "{out}");
    assert!(out.contains(&drift), "{out}");
    assert_eq!(
        remaining(client.clone()).await,
        10,
        "a dry run changes nothing"
    );

    let (code, out, err) = reconcile(&addr, &[]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&drift), "{out}");
    assert_eq!(remaining(client.clone()).await, 8);

    let id = sale.id.to_string();
    let (code, out, err) = reconcile(&addr, &["--dry-run", "--sale", &id]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out, format!("dry run: nothing was changed; the changes below would be made\nsale {id}: clean, remaining 8\n"));

    let (code, out, err) = reconcile(&addr, &["--sale", "987654321"]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("no sale 987654321"), "{err}");

    child.start_kill().unwrap();
    tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
}
