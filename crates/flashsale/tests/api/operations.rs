//! Operations endpoints and routing: health and the other operations endpoints, unknown
//! routes and wrong methods as JSON errors, request and trace ids in error bodies, and a retry
//! after a sale ended.

use std::time::Duration;

use chrono::Utc;
use flashsale_testkit::Eventually;
use reqwest::{header, Method, StatusCode};

use super::support::{create_sale, sale_body};
use crate::common::{body, error_code, ip, remaining, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_the_openapi_document_are_served() {
    let app = TestApp::spawn().await;
    let get = |path: &str| app.req(Method::GET, path, &ip(33)).send();

    let r = get("/healthz").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["status"], "ok");
    let r = get("/readyz").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["status"], "ok");

    let r = get("/metrics").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(ct.starts_with("text/plain"), "{ct}");
    r.text().await.unwrap();

    let r = get("/api/openapi.json").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc = body(r).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with('3'),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/users", "post"),
        ("/api/v1/sessions", "post"),
        ("/api/v1/sessions/current", "delete"),
        ("/api/v1/admin/sales", "post"),
        ("/api/v1/sales", "get"),
        ("/api/v1/sales/{id}", "get"),
        ("/api/v1/sales/{id}/orders", "post"),
        ("/api/v1/orders", "get"),
        ("/api/v1/orders/{id}", "get"),
        ("/api/v1/orders/{id}/pay", "post"),
        ("/api/v1/orders/{id}/cancel", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    let buy = &paths["/api/v1/sales/{id}/orders"]["post"]["responses"];
    for status in ["202", "400", "401", "404", "409", "422", "425", "429"] {
        assert!(buy.get(status).is_some(), "buy does not document {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_are_json_errors() {
    let app = TestApp::spawn().await;
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v2/sales",
        "/api/v1/sales/1/orders/2",
        "/",
    ] {
        let r = app.req(Method::GET, path, &ip(34)).send().await.unwrap();
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(ct.starts_with("application/json"), "{path}: {ct}");
        assert_eq!(
            error_code(r, StatusCode::NOT_FOUND).await,
            "not_found",
            "{path}"
        );
    }
    for (method, path) in [
        (Method::GET, "/api/v1/users"),
        (Method::PUT, "/api/v1/sales/1"),
        (Method::DELETE, "/api/v1/sales"),
        (Method::GET, "/api/v1/sales/1/orders"),
        (Method::GET, "/api/v1/orders/x/pay"),
        (Method::POST, "/healthz"),
    ] {
        let r = app.req(method.clone(), path, &ip(34)).send().await.unwrap();
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(ct.starts_with("application/json"), "{method} {path}: {ct}");
        assert_eq!(
            error_code(r, StatusCode::METHOD_NOT_ALLOWED).await,
            "method_not_allowed",
            "{method} {path}"
        );
    }
    // The request id in the body is the one in the header.
    let r = app.req(Method::GET, "/nope", &ip(34)).send().await.unwrap();
    let header_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let b = body(r).await;
    assert_eq!(b["error"]["request_id"], header_id.as_str());
    // A caller's request id is kept.
    let r = app
        .req(Method::GET, "/nope", &ip(34))
        .header("x-request-id", "my-request-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "my-request-42");
    assert_eq!(body(r).await["error"]["request_id"], "my-request-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_sale_ended_still_names_the_accepted_order() {
    let app = TestApp::spawn().await;
    let admin = app.admin().await;
    // Both shoppers first, so only the sale's creation and one buy must fit before its end.
    let token = app.customer("late@example.com", &ip(41)).await;
    let prober = app.customer("prober@example.com", &ip(42)).await;
    let now = Utc::now();
    let sale = body(
        create_sale(
            &app,
            &admin,
            &sale_body(
                100,
                10,
                now - chrono::Duration::minutes(1),
                now + chrono::Duration::seconds(4),
            ),
        )
        .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let r = app.buy(sale, &token, &ip(41), "before-the-end").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let order = body(r).await["order_id"].as_str().unwrap().to_owned();

    // Wait (bounded) until the sale is over for a new buy (probed by another shopper, slowly
    // enough to stay under the per-user buy limit).
    Eventually::new("the sale to end", Duration::from_secs(10))
        .every(Duration::from_millis(400))
        .until(|| async {
            let r = app
                .buy(
                    sale,
                    &prober,
                    &ip(42),
                    &format!("probe-{}", Utc::now().timestamp_millis()),
                )
                .await;
            if r.status() == StatusCode::CONFLICT {
                assert_eq!(error_code(r, StatusCode::CONFLICT).await, "sale_ended");
                Ok(())
            } else {
                Err(format!("a buy answered {}", r.status()))
            }
        })
        .await;
    // The client never saw its first answer and retries: same order, no new stock taken.
    let before = remaining(&app, sale).await;
    let r = app.buy(sale, &token, &ip(41), "before-the-end").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(body(r).await["order_id"], order.as_str());
    assert_eq!(remaining(&app, sale).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_carry_the_callers_trace_id_or_a_new_one() {
    let app = TestApp::spawn().await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = app
        .req(Method::GET, "/api/v1/nowhere", &ip(43))
        .header(
            "traceparent",
            format!("00-{caller_trace}-00f067aa0ba902b7-01"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(r).await["error"]["trace_id"], caller_trace);
    let fresh = body(
        app.req(Method::GET, "/api/v1/nowhere", &ip(43))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let fresh = fresh["error"]["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(fresh.len(), 32);
    assert_ne!(fresh, caller_trace);
}
