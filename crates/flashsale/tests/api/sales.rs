//! Sales over HTTP: only an admin creates them, bad ones are refused and never created, and
//! they are listed and read with their live remaining stock.

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::support::{buy_qty, create_sale, sale_body, ADMIN_IP};
use crate::common::{
    accepted, assert_unauthorized, body, error_code, ip, page_shows_remaining, with_json, TestApp,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_creates_sales_and_bad_ones_are_refused_and_never_created() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    let now = Utc::now();
    let (starts, ends) = (
        now - chrono::Duration::minutes(1),
        now + chrono::Duration::hours(1),
    );

    let r = create_sale(&app, &admin, &sale_body(50, 2, starts, ends)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let sale = body(r).await;
    assert!(sale["id"].as_i64().unwrap() > 0);
    assert_eq!(sale["name"], "test item");
    assert_eq!(sale["price_cents"], 1999);
    assert_eq!(sale["stock"], 50);
    assert_eq!(sale["remaining"], 50);
    assert_eq!(sale["per_user_limit"], 2);
    let got_starts = DateTime::parse_from_rfc3339(sale["starts_at"].as_str().unwrap()).unwrap();
    assert_eq!(got_starts.timestamp_millis(), starts.timestamp_millis());
    let got_ends = DateTime::parse_from_rfc3339(sale["ends_at"].as_str().unwrap()).unwrap();
    assert_eq!(got_ends.timestamp_millis(), ends.timestamp_millis());

    // per_user_limit defaults to 1.
    let mut no_limit = sale_body(5, 1, starts, ends);
    no_limit.as_object_mut().unwrap().remove("per_user_limit");
    let r = create_sale(&app, &admin, &no_limit).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(body(r).await["per_user_limit"], 1);

    // A customer: 403. No token: 401.
    let customer = app.customer("hank@example.com", &ip(10)).await;
    let r = app
        .authed(Method::POST, "/api/v1/admin/sales", &ip(10), &customer)
        .json(&sale_body(50, 2, starts, ends))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, StatusCode::FORBIDDEN).await, "forbidden");
    let r = app
        .req(Method::POST, "/api/v1/admin/sales", &ip(10))
        .json(&sale_body(50, 2, starts, ends))
        .send()
        .await
        .unwrap();
    assert_unauthorized(r).await;

    // Invalid values: 422.
    let mut invalid = vec![
        sale_body(0, 1, starts, ends),
        sale_body(-5, 1, starts, ends),
        sale_body(10, 11, starts, ends),
        sale_body(10, 0, starts, ends),
        sale_body(10, -1, starts, ends),
        sale_body(10, 1, ends, starts),
        sale_body(10, 1, starts, starts),
    ];
    let mut negative_price = sale_body(10, 1, starts, ends);
    negative_price["price_cents"] = json!(-1);
    invalid.push(negative_price);
    let mut empty_name = sale_body(10, 1, starts, ends);
    empty_name["name"] = json!("   ");
    invalid.push(empty_name);
    let mut long_name = sale_body(10, 1, starts, ends);
    long_name["name"] = json!("n".repeat(201));
    invalid.push(long_name);
    for bad in &invalid {
        let r = create_sale(&app, &admin, bad).await;
        assert_eq!(
            error_code(r, StatusCode::UNPROCESSABLE_ENTITY).await,
            "invalid_input",
            "{bad}"
        );
    }
    // Wrong types, missing or unknown fields, bad times: 422.
    let mut wrong_types = Vec::new();
    for (field, value) in [
        ("stock", json!("ten")),
        ("price_cents", json!(19.99)),
        ("stock", json!(1e30)),
        ("starts_at", json!("yesterday")),
        ("ends_at", json!(12345)),
        ("name", json!(null)),
    ] {
        let mut b = sale_body(10, 1, starts, ends);
        b[field] = value;
        wrong_types.push(b);
    }
    let mut missing = sale_body(10, 1, starts, ends);
    missing.as_object_mut().unwrap().remove("stock");
    wrong_types.push(missing);
    let mut unknown = sale_body(10, 1, starts, ends);
    unknown["remaining"] = json!(1_000_000);
    wrong_types.push(unknown);
    for bad in &wrong_types {
        let r = create_sale(&app, &admin, bad).await;
        assert_eq!(
            error_code(r, StatusCode::UNPROCESSABLE_ENTITY).await,
            "invalid_input",
            "{bad}"
        );
    }
    // Malformed JSON: 400. No content type: 415.
    let r = with_json(
        app.authed(Method::POST, "/api/v1/admin/sales", ADMIN_IP, &admin),
        r#"{"name": "x", "#,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(
        error_code(r, StatusCode::BAD_REQUEST).await,
        "malformed_json"
    );
    let r = app
        .authed(Method::POST, "/api/v1/admin/sales", ADMIN_IP, &admin)
        .body(sale_body(10, 1, starts, ends).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await,
        "unsupported_media_type"
    );

    // Only the two valid sales exist.
    let r = app
        .req(Method::GET, "/api/v1/sales", &ip(10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let sales = body(r).await;
    assert_eq!(sales.as_array().unwrap().len(), 2, "{sales}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sales_are_listed_and_read_with_live_remaining_stock() {
    let app = TestApp::spawn().await;
    let sale = app.open_sale(5, 2).await;
    let other = app.open_sale(7, 1).await;

    let list = |app: &TestApp| {
        let r = app.req(Method::GET, "/api/v1/sales", &ip(11)).send();
        async move {
            let r = r.await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            body(r).await.as_array().unwrap().clone()
        }
    };
    let find = |sales: &[Value], id: i64| sales.iter().find(|s| s["id"] == id).cloned().unwrap();

    let sales = list(&app).await;
    assert_eq!(sales.len(), 2);
    assert_eq!(find(&sales, sale)["remaining"], 5);
    assert_eq!(find(&sales, other)["remaining"], 7);
    let one = app.sale(sale).await;
    assert_eq!(one["id"], sale);
    assert_eq!(one["stock"], 5);
    assert_eq!(one["remaining"], 5);
    assert_eq!(one["per_user_limit"], 2);

    let token = app.customer("ivy@example.com", &ip(12)).await;
    accepted(buy_qty(&app, sale, &token, &ip(12), "k1", 2).await).await;
    // The page follows the inventory's feed (within a tenth of a second), the list with it.
    page_shows_remaining(&app, sale, 3).await;
    let one = app.sale(sale).await;
    assert_eq!(one["remaining"], 3);
    assert_eq!(one["stock"], 5);
    let sales = list(&app).await;
    assert_eq!(find(&sales, sale)["remaining"], 3);
    assert_eq!(find(&sales, other)["remaining"], 7);

    // Unknown: 404. Not a number: 400.
    for id in ["999999", "-1", "0"] {
        let r = app
            .req(Method::GET, &format!("/api/v1/sales/{id}"), &ip(11))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r, StatusCode::NOT_FOUND).await,
            "not_found",
            "{id}"
        );
    }
    for id in ["abc", "1.5", "99999999999999999999", "1%20OR%201=1"] {
        let r = app
            .req(Method::GET, &format!("/api/v1/sales/{id}"), &ip(11))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r, StatusCode::BAD_REQUEST).await,
            "bad_path",
            "{id}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_carry_an_etag_and_a_current_one_is_answered_304_until_the_stock_moves() {
    let app = TestApp::spawn().await;
    // A limit of 2: the test buys once per read path.
    let sale = app.open_sale(5, 2).await;
    let token = app.customer("reader@example.com", &ip(1)).await;
    for (left, path) in [
        (4, format!("/api/v1/sales/{sale}")),
        (3, "/api/v1/sales".to_owned()),
    ] {
        let get = |tag: Option<String>| {
            let mut rb = app.req(Method::GET, &path, &ip(1));
            if let Some(tag) = tag {
                rb = rb.header("if-none-match", tag);
            }
            async move { rb.send().await.unwrap() }
        };
        let r = get(None).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["cache-control"], "public, max-age=1");
        let tag = r.headers()["etag"].to_str().unwrap().to_owned();
        assert!(tag.starts_with('"'), "a strong tag: {tag}");
        let shown: Value = r.json().await.unwrap();

        // The same answer again: 304, no body, the same tag (also weakly and as `*`).
        for condition in [tag.clone(), format!("W/{tag}"), "\"other\", *".to_owned()] {
            let r = get(Some(condition.clone())).await;
            assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{condition}");
            assert_eq!(r.headers()["etag"], tag.as_str());
            assert!(r.bytes().await.unwrap().is_empty());
        }
        // Another tag gets the body.
        let r = get(Some("\"not-this-one\"".into())).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.json::<Value>().await.unwrap(), shown);

        // A buy moves the stock: the old tag no longer matches, the new answer shows it.
        let key = format!("etag-{}", path.len());
        let bought = app.buy(sale, &token, &ip(1), &key).await;
        assert_eq!(bought.status(), StatusCode::ACCEPTED);
        page_shows_remaining(&app, sale, left).await;
        let r = get(Some(tag.clone())).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_ne!(r.headers()["etag"], tag.as_str());
        let now: Value = r.json().await.unwrap();
        assert_ne!(now, shown, "remaining moved");
    }
}
