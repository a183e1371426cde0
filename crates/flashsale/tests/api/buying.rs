//! Buying over HTTP: idempotency keys, quantities, the per-user limit, sold out, and sales
//! that are unknown, not started or over — every refusal takes no stock.

use std::time::Duration;

use chrono::Utc;
use reqwest::{header, Method, StatusCode};
use serde_json::json;

use super::support::{
    buy_qty, buy_raw, create_sale, get_order, list_orders, sale_body, wait_for_status,
};
use crate::common::{accepted, body, error_code, ip, remaining, with_json, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_is_accepted_once_per_idempotency_key() {
    let app = TestApp::spawn().await;
    let sale = app.open_sale(10, 3).await;
    let token = app.customer("jack@example.com", &ip(13)).await;

    let first = accepted(app.buy(sale, &token, &ip(13), "key-1").await).await;
    let again = accepted(app.buy(sale, &token, &ip(13), "key-1").await).await;
    assert_eq!(first, again);
    assert_eq!(remaining(&app, sale).await, 9, "stock taken once");

    let order = wait_for_status(
        &app,
        &token,
        &ip(13),
        &first,
        "created",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(order["id"], first.as_str());
    assert_eq!(order["sale_id"], sale);
    assert_eq!(order["quantity"], 1);
    assert_eq!(order["price_cents"], 1999);
    assert!(order["expires_at"].as_str().is_some(), "{order}");
    let orders = list_orders(&app, &token, &ip(13)).await;
    assert_eq!(orders.len(), 1, "one order for one key: {orders:?}");

    // A retry after the order was written is still the same order.
    let later = accepted(app.buy(sale, &token, &ip(13), "key-1").await).await;
    assert_eq!(later, first);
    assert_eq!(remaining(&app, sale).await, 9);
    assert_eq!(list_orders(&app, &token, &ip(13)).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_needs_a_valid_idempotency_key() {
    let app = TestApp::spawn().await;
    let sale = app.open_sale(10, 1).await;
    let token = app.customer("kate@example.com", &ip(14)).await;
    let path = format!("/api/v1/sales/{sale}/orders");

    let r = app
        .authed(Method::POST, &path, &ip(14), &token)
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, StatusCode::BAD_REQUEST).await,
        "missing_idempotency_key"
    );
    for key in [
        String::new(),
        "a b".to_owned(),
        "k".repeat(129),
        "tab\tkey".to_owned(),
    ] {
        let r = app
            .authed(Method::POST, &path, &ip(14), &token)
            .header("idempotency-key", &key)
            .json(&json!({"quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r, StatusCode::BAD_REQUEST).await,
            "invalid_idempotency_key",
            "{key:?}"
        );
    }
    // Non-ASCII bytes in the header.
    let r = app
        .authed(Method::POST, &path, &ip(14), &token)
        .header(
            "idempotency-key",
            header::HeaderValue::from_bytes(b"cl\xe9").unwrap(),
        )
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, StatusCode::BAD_REQUEST).await,
        "invalid_idempotency_key"
    );
    assert_eq!(remaining(&app, sale).await, 10);
    assert!(list_orders(&app, &token, &ip(14)).await.is_empty());

    // The longest valid key works.
    accepted(app.buy(sale, &token, &ip(14), &"k".repeat(128)).await).await;
    assert_eq!(remaining(&app, sale).await, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_refuses_bad_quantities_and_takes_nothing() {
    let app = TestApp::spawn().await;
    let sale = app.open_sale(100, 2).await;
    let token = app.customer("liam@example.com", &ip(15)).await;

    for (n, text) in [
        r#"{"quantity": 0}"#,
        r#"{"quantity": -1}"#,
        r#"{"quantity": 1e30}"#,
        r#"{"quantity": 100000000000000000000}"#,
        r#"{"quantity": 9223372036854775807}"#,
        r#"{"quantity": "1"}"#,
        r#"{"quantity": 1.5}"#,
        r#"{"quantity": null}"#,
        r#"{"quantity": 1, "price_cents": 1}"#,
        "[1]",
    ]
    .iter()
    .enumerate()
    {
        let r = buy_raw(&app, sale, &token, &ip(15), &format!("q{n}"), text).await;
        assert_eq!(
            error_code(r, StatusCode::UNPROCESSABLE_ENTITY).await,
            "invalid_input",
            "{text}"
        );
    }
    // A huge quantity is explained as a range, not as "at least 1".
    let r = buy_raw(
        &app,
        sale,
        &token,
        &ip(15),
        "huge",
        r#"{"quantity": 9223372036854775807}"#,
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let message = body(r).await["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("between 1 and"), "{message}");
    // Malformed JSON: 400. A body that is not JSON: 415.
    let r = buy_raw(&app, sale, &token, &ip(15), "m1", r#"{"quantity": "#).await;
    assert_eq!(
        error_code(r, StatusCode::BAD_REQUEST).await,
        "malformed_json"
    );
    let r = app
        .authed(
            Method::POST,
            &format!("/api/v1/sales/{sale}/orders"),
            &ip(15),
            &token,
        )
        .header("idempotency-key", "m2")
        .header(header::CONTENT_TYPE, "text/plain")
        .body("quantity=1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await,
        "unsupported_media_type"
    );
    // Over the size limit: 413.
    let padding = " ".repeat(17 * 1024);
    let r = buy_raw(
        &app,
        sale,
        &token,
        &ip(15),
        "big",
        &format!("{{\"quantity\": 1{padding}}}"),
    )
    .await;
    assert_eq!(
        error_code(r, StatusCode::PAYLOAD_TOO_LARGE).await,
        "payload_too_large"
    );
    // More than the per-user limit in one buy: 422.
    let r = buy_qty(&app, sale, &token, &ip(15), "q-over", 3).await;
    assert_eq!(
        error_code(r, StatusCode::UNPROCESSABLE_ENTITY).await,
        "invalid_input"
    );

    assert_eq!(remaining(&app, sale).await, 100, "bad input took stock");
    assert!(list_orders(&app, &token, &ip(15)).await.is_empty());

    // An empty body means quantity 1.
    let r = app
        .authed(
            Method::POST,
            &format!("/api/v1/sales/{sale}/orders"),
            &ip(15),
            &token,
        )
        .header("idempotency-key", "empty-body")
        .send()
        .await
        .unwrap();
    let order = accepted(r).await;
    assert_eq!(remaining(&app, sale).await, 99);
    let o = body(get_order(&app, &token, &ip(15), &order).await).await;
    assert_eq!(o["quantity"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buy_stops_at_the_per_user_limit_and_at_sold_out() {
    let app = TestApp::spawn().await;
    let sale = app.open_sale(3, 2).await;
    let (a, b, c) = (
        app.customer("mia@example.com", &ip(16)).await,
        app.customer("noah@example.com", &ip(17)).await,
        app.customer("olga@example.com", &ip(18)).await,
    );

    accepted(buy_qty(&app, sale, &a, &ip(16), "a1", 2).await).await;
    let r = buy_qty(&app, sale, &a, &ip(16), "a2", 1).await;
    assert_eq!(
        error_code(r, StatusCode::CONFLICT).await,
        "per_user_limit_reached"
    );
    assert_eq!(remaining(&app, sale).await, 1);

    let b_order = accepted(buy_qty(&app, sale, &b, &ip(17), "b1", 1).await).await;
    assert_eq!(remaining(&app, sale).await, 0);
    let r = buy_qty(&app, sale, &c, &ip(18), "c1", 1).await;
    assert_eq!(error_code(r, StatusCode::CONFLICT).await, "sold_out");
    // Asking for more than is left is sold out too, not a partial fill.
    let r = buy_qty(&app, sale, &c, &ip(18), "c2", 2).await;
    assert_eq!(error_code(r, StatusCode::CONFLICT).await, "sold_out");
    assert_eq!(remaining(&app, sale).await, 0);
    assert!(list_orders(&app, &c, &ip(18)).await.is_empty());

    // A retry of an accepted buy after the sale sold out still answers with its order.
    let retried = accepted(buy_qty(&app, sale, &b, &ip(17), "b1", 1).await).await;
    assert_eq!(retried, b_order);
    assert_eq!(remaining(&app, sale).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buying_from_unknown_unstarted_or_ended_sales_is_refused_and_takes_nothing() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let now = Utc::now();
    let future = body(
        create_sale(
            &app,
            &admin,
            &sale_body(
                10,
                1,
                now + chrono::Duration::hours(1),
                now + chrono::Duration::hours(2),
            ),
        )
        .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let past = body(
        create_sale(
            &app,
            &admin,
            &sale_body(
                10,
                1,
                now - chrono::Duration::hours(2),
                now - chrono::Duration::hours(1),
            ),
        )
        .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let token = app.customer("pete@example.com", &ip(19)).await;

    let r = app.buy(future, &token, &ip(19), "f1").await;
    assert_eq!(
        error_code(r, StatusCode::TOO_EARLY).await,
        "sale_not_started"
    );
    let r = app.buy(past, &token, &ip(19), "p1").await;
    assert_eq!(error_code(r, StatusCode::CONFLICT).await, "sale_ended");
    let r = app.buy(987_654, &token, &ip(19), "u1").await;
    assert_eq!(error_code(r, StatusCode::NOT_FOUND).await, "not_found");
    // Asked again (now from the gateway's negative cache): still 404.
    let r = app.buy(987_654, &token, &ip(19), "u2").await;
    assert_eq!(error_code(r, StatusCode::NOT_FOUND).await, "not_found");
    let r = app
        .authed(Method::POST, "/api/v1/sales/abc/orders", &ip(19), &token)
        .header("idempotency-key", "x1")
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, StatusCode::BAD_REQUEST).await, "bad_path");

    assert_eq!(remaining(&app, future).await, 10);
    assert_eq!(remaining(&app, past).await, 10);
    assert!(list_orders(&app, &token, &ip(19)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_cannot_be_reused_for_another_request() {
    let app = TestApp::spawn().await;
    let first = app.open_sale(10, 2).await;
    let second = app.open_sale(10, 2).await;
    let token = app.customer("quinn@example.com", &ip(20)).await;

    let order = accepted(app.buy(first, &token, &ip(20), "shared").await).await;
    let r = app.buy(second, &token, &ip(20), "shared").await;
    assert_eq!(
        error_code(r, StatusCode::UNPROCESSABLE_ENTITY).await,
        "idempotency_key_reused"
    );
    let r = buy_qty(&app, first, &token, &ip(20), "shared", 2).await;
    assert_eq!(
        error_code(r, StatusCode::UNPROCESSABLE_ENTITY).await,
        "idempotency_key_reused"
    );

    assert_eq!(remaining(&app, first).await, 9);
    assert_eq!(remaining(&app, second).await, 10);
    let o = wait_for_status(
        &app,
        &token,
        &ip(20),
        &order,
        "created",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(o["sale_id"], first);
    assert_eq!(o["quantity"], 1);

    // Another user may use the same key text: keys are per user.
    let other = app.customer("rita@example.com", &ip(21)).await;
    let theirs = accepted(app.buy(second, &other, &ip(21), "shared").await).await;
    assert_ne!(theirs, order);
    assert_eq!(remaining(&app, second).await, 9);
}

/// Once a sale is known sold out, the gateway answers buys before its middleware (the fast
/// path): every answer must still be the one the buy flow gives — the same refusals for a bad
/// request, `202` for a retry of an accepted order, and the full error body and headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sold_out_answers_given_early_are_the_ones_the_buy_flow_gives() {
    // Stock events followed: the sold-out is pushed, so every attempt below is answered from it.
    let app = TestApp::spawn_with(|c| c.gateway.follow_stock_events = true).await;
    let sale = app.open_sale(2, 2).await;
    let (a, c) = (
        app.customer("pia@example.com", &ip(31)).await,
        app.customer("quinn@example.com", &ip(32)).await,
    );
    let a_order = accepted(buy_qty(&app, sale, &a, &ip(31), "a1", 2).await).await;
    // The first refusal comes from the inventory; it teaches the gateway.
    let r = buy_qty(&app, sale, &c, &ip(32), "c0", 1).await;
    assert_eq!(error_code(r, StatusCode::CONFLICT).await, "sold_out");

    for round in 0..3 {
        let r = buy_qty(&app, sale, &c, &ip(32), &format!("c{round}"), 1).await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let traceparent = r.headers()["traceparent"].to_str().unwrap().to_owned();
        let error = body(r).await["error"].clone();
        assert_eq!(error["code"], "sold_out");
        assert_eq!(error["request_id"], request_id.as_str());
        assert_eq!(
            traceparent.split('-').nth(1),
            error["trace_id"].as_str(),
            "the body names the header's trace"
        );
    }
    // The caller's request id is kept.
    let r = with_json(
        app.authed(
            Method::POST,
            &format!("/api/v1/sales/{sale}/orders"),
            &ip(32),
            &c,
        )
        .header("idempotency-key", "c9")
        .header("x-request-id", "mine-123"),
        "{}",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.headers()["x-request-id"], "mine-123");
    assert_eq!(body(r).await["error"]["request_id"], "mine-123");

    // Bad requests get the flow's own refusals, not "sold out".
    let bad = [
        (
            buy_raw(&app, sale, &c, &ip(32), "c5", "{\"quantity\":").await,
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            buy_qty(&app, sale, &c, &ip(32), "c6", 0).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            buy_qty(&app, sale, &c, &ip(32), "c7", 3).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            buy_qty(&app, sale, "not-a-token", &ip(32), "c8", 1).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            with_json(
                app.authed(
                    Method::POST,
                    &format!("/api/v1/sales/{sale}/orders"),
                    &ip(32),
                    &c,
                ),
                "{}",
            )
            .send()
            .await
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
        ),
    ];
    for (r, status, code) in bad {
        assert_eq!(error_code(r, status).await, code);
    }
    // The same token from another client is not the remembered one: full authentication.
    let r = buy_qty(&app, sale, &c, &ip(33), "c10", 1).await;
    assert_eq!(
        error_code(r, StatusCode::UNAUTHORIZED).await,
        "unauthorized"
    );

    // A retry of the accepted order still gets it.
    let retried = accepted(buy_qty(&app, sale, &a, &ip(31), "a1", 2).await).await;
    assert_eq!(retried, a_order);
    assert_eq!(remaining(&app, sale).await, 0);
    assert!(list_orders(&app, &c, &ip(32)).await.is_empty());
}
