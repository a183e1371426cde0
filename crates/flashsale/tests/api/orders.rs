//! Orders over HTTP: private to their owner, paid or cancelled once, stock given back once
//! when cancelled, and an unpaid order expiring.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flashsale_testkit::eventually;
use reqwest::StatusCode;
use serde_json::Value;

use super::support::{buy_qty, get_order, list_orders, transition, wait_for_status};
use crate::common::{accepted, body, error_code, ip, remaining, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_private_to_their_owner() {
    let app = TestApp::spawn().await;
    let sale = app.open_sale(10, 2).await;
    let alice = app.customer("alice@example.com", &ip(25)).await;
    let bob = app.customer("bob@example.com", &ip(26)).await;

    let a1 = accepted(app.buy(sale, &alice, &ip(25), "a1").await).await;
    let a2 = accepted(app.buy(sale, &alice, &ip(25), "a2").await).await;
    let b1 = accepted(app.buy(sale, &bob, &ip(26), "b1").await).await;

    // Visible at once (pending or created), then created.
    let r = get_order(&app, &alice, &ip(25), &a1).await;
    assert_eq!(r.status(), StatusCode::OK);
    let o = body(r).await;
    assert!(o["status"] == "pending" || o["status"] == "created", "{o}");
    let o = wait_for_status(
        &app,
        &alice,
        &ip(25),
        &a1,
        "created",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(o["id"], a1.as_str());
    assert_eq!(o["sale_id"], sale);
    assert_eq!(o["quantity"], 1);
    let created_at = DateTime::parse_from_rfc3339(o["created_at"].as_str().unwrap()).unwrap();
    assert!(
        (Utc::now() - created_at.with_timezone(&Utc))
            .num_seconds()
            .abs()
            < 60
    );
    wait_for_status(
        &app,
        &alice,
        &ip(25),
        &a2,
        "created",
        Duration::from_secs(5),
    )
    .await;
    wait_for_status(&app, &bob, &ip(26), &b1, "created", Duration::from_secs(5)).await;

    // Another user's order does not exist for me.
    let r = get_order(&app, &bob, &ip(26), &a1).await;
    assert_eq!(error_code(r, StatusCode::NOT_FOUND).await, "not_found");
    let r = get_order(&app, &alice, &ip(25), &b1).await;
    assert_eq!(error_code(r, StatusCode::NOT_FOUND).await, "not_found");
    // Unknown and malformed ids: 404.
    for id in [
        uuid::Uuid::new_v4().to_string(),
        "not-a-uuid".to_owned(),
        "1".to_owned(),
    ] {
        let r = get_order(&app, &alice, &ip(25), &id).await;
        assert_eq!(
            error_code(r, StatusCode::NOT_FOUND).await,
            "not_found",
            "{id}"
        );
    }

    // Lists hold one's own orders only.
    let ids = |orders: Vec<Value>| {
        let mut ids: Vec<String> = orders
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let mut mine = vec![a1.clone(), a2.clone()];
    mine.sort();
    assert_eq!(ids(list_orders(&app, &alice, &ip(25)).await), mine);
    assert_eq!(
        ids(list_orders(&app, &bob, &ip(26)).await),
        vec![b1.clone()]
    );
    let carol = app.customer("carol@example.com", &ip(27)).await;
    assert!(list_orders(&app, &carol, &ip(27)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_cannot_be_paid_or_cancelled_again() {
    let app = TestApp::spawn().await;
    let sale = app.open_sale(10, 1).await;
    let token = app.customer("tom@example.com", &ip(28)).await;
    let order = accepted(app.buy(sale, &token, &ip(28), "pay-me").await).await;
    wait_for_status(
        &app,
        &token,
        &ip(28),
        &order,
        "created",
        Duration::from_secs(5),
    )
    .await;

    let r = transition(&app, &token, &ip(28), &order, "pay").await;
    assert_eq!(r.status(), StatusCode::OK);
    let paid = body(r).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["id"], order.as_str());

    let r = transition(&app, &token, &ip(28), &order, "pay").await;
    assert_eq!(
        error_code(r, StatusCode::CONFLICT).await,
        "illegal_transition"
    );
    let r = transition(&app, &token, &ip(28), &order, "cancel").await;
    assert_eq!(
        error_code(r, StatusCode::CONFLICT).await,
        "illegal_transition"
    );

    let o = body(get_order(&app, &token, &ip(28), &order).await).await;
    assert_eq!(o["status"], "paid");
    assert_eq!(
        remaining(&app, sale).await,
        9,
        "a paid order keeps its stock"
    );

    // Unknown and malformed ids: 404.
    for id in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        for verb in ["pay", "cancel"] {
            let r = transition(&app, &token, &ip(28), &id, verb).await;
            assert_eq!(
                error_code(r, StatusCode::NOT_FOUND).await,
                "not_found",
                "{verb} {id}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_gives_the_stock_back_once() {
    let app = TestApp::spawn().await;
    let sale = app.open_sale(10, 2).await;
    let token = app.customer("uma@example.com", &ip(29)).await;
    let order = accepted(buy_qty(&app, sale, &token, &ip(29), "cancel-me", 2).await).await;
    assert_eq!(remaining(&app, sale).await, 8);
    wait_for_status(
        &app,
        &token,
        &ip(29),
        &order,
        "created",
        Duration::from_secs(5),
    )
    .await;

    let r = transition(&app, &token, &ip(29), &order, "cancel").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["status"], "cancelled");
    assert_eq!(remaining(&app, sale).await, 10, "the quantity came back");

    let r = transition(&app, &token, &ip(29), &order, "cancel").await;
    assert_eq!(
        error_code(r, StatusCode::CONFLICT).await,
        "illegal_transition"
    );
    let r = transition(&app, &token, &ip(29), &order, "pay").await;
    assert_eq!(
        error_code(r, StatusCode::CONFLICT).await,
        "illegal_transition"
    );
    assert_eq!(remaining(&app, sale).await, 10, "released once only");
    let o = body(get_order(&app, &token, &ip(29), &order).await).await;
    assert_eq!(o["status"], "cancelled");

    // The user's limit is free again: a new buy is accepted.
    accepted(buy_qty(&app, sale, &token, &ip(29), "after-cancel", 2).await).await;
    assert_eq!(remaining(&app, sale).await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_else_can_pay_or_cancel_my_order() {
    let app = TestApp::spawn().await;
    let sale = app.open_sale(10, 1).await;
    let owner = app.customer("vera@example.com", &ip(30)).await;
    let thief = app.customer("walt@example.com", &ip(31)).await;
    let order = accepted(app.buy(sale, &owner, &ip(30), "mine").await).await;
    wait_for_status(
        &app,
        &owner,
        &ip(30),
        &order,
        "created",
        Duration::from_secs(5),
    )
    .await;

    let r = transition(&app, &thief, &ip(31), &order, "cancel").await;
    assert_eq!(error_code(r, StatusCode::NOT_FOUND).await, "not_found");
    let r = transition(&app, &thief, &ip(31), &order, "pay").await;
    assert_eq!(error_code(r, StatusCode::NOT_FOUND).await, "not_found");

    let o = body(get_order(&app, &owner, &ip(30), &order).await).await;
    assert_eq!(o["status"], "created", "nothing changed");
    assert_eq!(remaining(&app, sale).await, 9);

    let r = transition(&app, &owner, &ip(30), &order, "pay").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["status"], "paid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_order_expires_and_gives_its_stock_back() {
    let app = TestApp::spawn_with(|c| {
        c.order.payment_timeout_secs = 1;
        c.order.expiry_interval_ms = 50;
    })
    .await;
    let sale = app.open_sale(5, 1).await;
    let token = app.customer("xena@example.com", &ip(32)).await;
    let order = accepted(app.buy(sale, &token, &ip(32), "slow-payer").await).await;
    assert_eq!(remaining(&app, sale).await, 4);

    let o = wait_for_status(
        &app,
        &token,
        &ip(32),
        &order,
        "expired",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(o["id"], order.as_str());
    // The release follows the status change; allow it a moment.
    eventually(
        "the expired order's stock to come back",
        Duration::from_secs(5),
        || async { remaining(&app, sale).await == 5 },
    )
    .await;

    let r = transition(&app, &token, &ip(32), &order, "pay").await;
    assert_eq!(
        error_code(r, StatusCode::CONFLICT).await,
        "illegal_transition"
    );
    let r = transition(&app, &token, &ip(32), &order, "cancel").await;
    assert_eq!(
        error_code(r, StatusCode::CONFLICT).await,
        "illegal_transition"
    );
    assert_eq!(remaining(&app, sale).await, 5, "released once only");
    let o = body(get_order(&app, &token, &ip(32), &order).await).await;
    assert_eq!(o["status"], "expired");
}
