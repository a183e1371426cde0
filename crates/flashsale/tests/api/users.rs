//! Registration over HTTP: it never tells whether an email has an account, and bad input is
//! refused without creating anything.

use reqwest::{header, Method, StatusCode};
use serde_json::json;

use crate::common::{assert_unauthorized, body, error_code, ip, with_json, TestApp, PASSWORD};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_does_not_reveal_whether_an_email_has_an_account() {
    let app = TestApp::spawn().await;
    let register = |email: &'static str, password: &'static str| {
        app.req(Method::POST, "/api/v1/users", &ip(1))
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    let first = register(" Ann@Example.com ", PASSWORD).await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first = body(first).await;
    assert_eq!(first["email"], "ann@example.com");

    // The same address again, in any case and with another password: the very same answer.
    let again = register("ANN@example.com", "another-password")
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(body(again).await, first);

    // Nothing changed: the first password still opens the account, the second does not.
    let token = app.login_as("ann@example.com", PASSWORD, &ip(1)).await;
    assert!(!token.is_empty());
    let r = app
        .req(Method::POST, "/api/v1/sessions", &ip(1))
        .json(&json!({"email": "ann@example.com", "password": "another-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_refuses_bad_input_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let email = "bob@example.com";
    let post = || app.req(Method::POST, "/api/v1/users", &ip(2));

    for bad_email in [
        "no-at-sign",
        "bob@",
        "@example.com",
        "b ob@example.com",
        "a@b@c",
        "",
    ] {
        let r = post()
            .json(&json!({"email": bad_email, "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r, StatusCode::UNPROCESSABLE_ENTITY).await,
            "invalid_input",
            "{bad_email:?}"
        );
    }
    for bad_password in ["", "short", "1234567", &"x".repeat(129)] {
        let r = post()
            .json(&json!({"email": email, "password": bad_password}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r, StatusCode::UNPROCESSABLE_ENTITY).await,
            "invalid_input"
        );
    }
    // Malformed JSON: 400.
    for text in [
        r#"{"email": "bob@example.com", "password": "#,
        "not json",
        "",
        r#"{"email":}"#,
    ] {
        let r = with_json(post(), text).send().await.unwrap();
        assert_eq!(
            error_code(r, StatusCode::BAD_REQUEST).await,
            "malformed_json",
            "{text:?}"
        );
    }
    // Wrong types, missing or unknown fields: 422.
    for text in [
        r#"{"email": 1, "password": true}"#,
        r#"{"email": "bob@example.com"}"#,
        r#"{"password": "customer-password"}"#,
        r#"{"email": "bob@example.com", "password": "customer-password", "role": "admin"}"#,
        r#"["bob@example.com", "customer-password"]"#,
        "null",
    ] {
        let r = with_json(post(), text).send().await.unwrap();
        assert_eq!(
            error_code(r, StatusCode::UNPROCESSABLE_ENTITY).await,
            "invalid_input",
            "{text}"
        );
    }
    // No or wrong content type: 415.
    let valid = json!({"email": email, "password": PASSWORD}).to_string();
    let r = post().body(valid.clone()).send().await.unwrap();
    assert_eq!(
        error_code(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await,
        "unsupported_media_type"
    );
    let r = post()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(valid)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, StatusCode::UNSUPPORTED_MEDIA_TYPE).await,
        "unsupported_media_type"
    );
    // Over 16 KiB: 413.
    let r = post()
        .json(&json!({"email": email, "password": "x".repeat(17 * 1024)}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, StatusCode::PAYLOAD_TOO_LARGE).await,
        "payload_too_large"
    );

    // Nothing was created: the address cannot log in, and is still free.
    let r = app
        .req(Method::POST, "/api/v1/sessions", &ip(2))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_unauthorized(r).await;
    assert_eq!(
        app.register(email, &ip(2)).await.status(),
        StatusCode::ACCEPTED
    );
}
