//! The HTTP API end to end: every endpoint of the gateway against the real system (all services
//! in-process, real HTTP and gRPC), and every error status a client can provoke — with the
//! JSON error shape `{"error": {"code", "message", "request_id"}}` and, for bad input, proof
//! that nothing changed (guarantee 6).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{
    accepted, assert_unauthorized, body, error_code, ip, remaining, with_json, TestApp, PASSWORD,
    UA,
};
use flashsale_auth::token::{SigningKey, TokenKeys};
use reqwest::{header, Method, Response, StatusCode};
use serde_json::{json, Value};

/// The IP the harness's `admin()` logs in from (its token is bound to it).
const ADMIN_IP: &str = "10.255.255.254";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn sale_body(
    stock: i64,
    per_user_limit: i64,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
) -> Value {
    json!({
        "name": "test item",
        "price_cents": 1999,
        "stock": stock,
        "per_user_limit": per_user_limit,
        "starts_at": starts_at.to_rfc3339(),
        "ends_at": ends_at.to_rfc3339(),
    })
}

async fn create_sale(app: &TestApp, admin: &str, body: &Value) -> Response {
    app.authed(Method::POST, "/api/v1/admin/sales", ADMIN_IP, admin)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A buy with an explicit JSON body text.
async fn buy_raw(
    app: &TestApp,
    sale: i64,
    token: &str,
    client_ip: &str,
    key: &str,
    text: &str,
) -> Response {
    with_json(
        app.authed(
            Method::POST,
            &format!("/api/v1/sales/{sale}/orders"),
            client_ip,
            token,
        )
        .header("idempotency-key", key),
        text,
    )
    .send()
    .await
    .unwrap()
}

/// A buy of `quantity` units.
async fn buy_qty(
    app: &TestApp,
    sale: i64,
    token: &str,
    client_ip: &str,
    key: &str,
    quantity: i64,
) -> Response {
    buy_raw(
        app,
        sale,
        token,
        client_ip,
        key,
        &json!({ "quantity": quantity }).to_string(),
    )
    .await
}

/// Asserts `202 {order_id, status: "pending"}` and returns the order id.
async fn get_order(app: &TestApp, token: &str, client_ip: &str, order: &str) -> Response {
    app.authed(
        Method::GET,
        &format!("/api/v1/orders/{order}"),
        client_ip,
        token,
    )
    .send()
    .await
    .unwrap()
}

async fn list_orders(app: &TestApp, token: &str, client_ip: &str) -> Vec<Value> {
    let r = app
        .authed(Method::GET, "/api/v1/orders", client_ip, token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    body(r).await.as_array().unwrap().clone()
}

async fn transition(
    app: &TestApp,
    token: &str,
    client_ip: &str,
    order: &str,
    verb: &str,
) -> Response {
    app.authed(
        Method::POST,
        &format!("/api/v1/orders/{order}/{verb}"),
        client_ip,
        token,
    )
    .send()
    .await
    .unwrap()
}

/// Polls the order until its status is `want` (every 20 ms, failing after `limit`).
async fn wait_for_status(
    app: &TestApp,
    token: &str,
    client_ip: &str,
    order: &str,
    want: &str,
    limit: Duration,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let r = get_order(app, token, client_ip, order).await;
        assert_eq!(r.status(), StatusCode::OK);
        let o = body(r).await;
        if o["status"] == want {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "order {order} is still {} after {limit:?}; expected {want}",
            o["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (enough for JWT parts).
fn b64url_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(B64URL[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn b64url_decode(s: &str) -> Vec<u8> {
    let (mut bits, mut nbits, mut out) = (0u32, 0u32, Vec::new());
    for c in s.bytes() {
        let v = B64URL
            .iter()
            .position(|&x| x == c)
            .expect("base64url character");
        bits = (bits << 6) | u32::try_from(v).unwrap();
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push(u8::try_from((bits >> nbits) & 0xff).unwrap());
            bits &= (1 << nbits) - 1;
        }
    }
    out
}

/// The claims of a token (not verified).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&b64url_decode(payload)).unwrap()
}

/// The gateway's real signing keys, from the secret `flashsale dev` keeps in its data dir.
fn real_keys(app: &TestApp) -> TokenKeys {
    let secret = std::fs::read_to_string(app.data_dir.path().join("jwt-secret")).unwrap();
    keys_with("k1", secret.trim().as_bytes(), "flashsale-api")
}

/// Signing keys with this kid, secret and audience (issuer `flashsale`, 15-minute tokens).
fn keys_with(kid: &str, secret: &[u8], audience: &str) -> TokenKeys {
    TokenKeys::new(
        SigningKey {
            kid: kid.into(),
            secret: secret.to_vec(),
        },
        Vec::new(),
        "flashsale",
        audience,
        15 * 60,
    )
    .unwrap()
}

fn unix_now() -> i64 {
    Utc::now().timestamp()
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Sessions and authentication
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protected_endpoint_needs_a_token() {
    let app = TestApp::spawn().await;
    let sale = app.open_sale(10, 1).await;
    let order = uuid::Uuid::new_v4();
    let endpoints = [
        (Method::DELETE, "/api/v1/sessions/current".to_owned()),
        (Method::POST, "/api/v1/admin/sales".to_owned()),
        (Method::POST, format!("/api/v1/sales/{sale}/orders")),
        (Method::GET, "/api/v1/orders".to_owned()),
        (Method::GET, format!("/api/v1/orders/{order}")),
        (Method::POST, format!("/api/v1/orders/{order}/pay")),
        (Method::POST, format!("/api/v1/orders/{order}/cancel")),
    ];
    for (method, path) in endpoints {
        let r = app
            .req(method.clone(), &path, &ip(5))
            .header("idempotency-key", "k")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r, StatusCode::UNAUTHORIZED).await,
            "unauthorized",
            "{method} {path}"
        );
    }
    assert_eq!(remaining(&app, sale).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_forged_and_alg_none_tokens_are_assert_unauthorized() {
    let app = TestApp::spawn().await;
    let token = app.customer("erin@example.com", &ip(6)).await;
    let parts: Vec<&str> = token.split('.').collect();
    let c = claims(&token);
    let user_id: i64 = c["sub"].as_str().unwrap().parse().unwrap();
    let jti = c["jti"].as_str().unwrap();

    // Missing, garbage, wrong scheme.
    assert_unauthorized(
        app.req(Method::GET, "/api/v1/orders", &ip(6))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for value in [
        "Bearer garbage",
        "Bearer ",
        "Bearer a.b.c",
        "garbage",
        &format!("Basic {token}"),
    ] {
        let r = app
            .req(Method::GET, "/api/v1/orders", &ip(6))
            .header(header::AUTHORIZATION, value)
            .send()
            .await
            .unwrap();
        assert_unauthorized(r).await;
    }

    // The signature part changed.
    let sig = parts[2];
    let flipped_first = if sig.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{}.{}.{flipped_first}{}", parts[0], parts[1], &sig[1..]);
    assert_unauthorized(app.whoami(&tampered, &ip(6), UA).await).await;
    let mut sig_bytes = b64url_decode(sig);
    sig_bytes[0] ^= 1;
    let tampered = format!("{}.{}.{}", parts[0], parts[1], b64url_encode(&sig_bytes));
    assert_unauthorized(app.whoami(&tampered, &ip(6), UA).await).await;
    // No signature at all.
    assert_unauthorized(
        app.whoami(&format!("{}.{}.", parts[0], parts[1]), &ip(6), UA)
            .await,
    )
    .await;

    // The payload changed (another user id) under the original signature.
    let mut forged_claims = c.clone();
    forged_claims["sub"] = json!("1");
    let forged_payload = b64url_encode(forged_claims.to_string().as_bytes());
    assert_unauthorized(
        app.whoami(&format!("{}.{forged_payload}.{sig}", parts[0]), &ip(6), UA)
            .await,
    )
    .await;

    // Signed with another secret under the same kid, for the real session.
    let other = keys_with(
        "k1",
        b"another secret of at least 32 bytes!",
        "flashsale-api",
    );
    let forged = other.issue(user_id, jti, unix_now(), 900).unwrap();
    assert_unauthorized(app.whoami(&forged, &ip(6), UA).await).await;

    // alg: none, with and without a signature.
    let none_header = b64url_encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    assert_unauthorized(
        app.whoami(&format!("{none_header}.{}.", parts[1]), &ip(6), UA)
            .await,
    )
    .await;
    assert_unauthorized(
        app.whoami(&format!("{none_header}.{}.{sig}", parts[1]), &ip(6), UA)
            .await,
    )
    .await;
    // Another algorithm named in the header.
    let hs512 = b64url_encode(br#"{"alg":"HS512","typ":"JWT","kid":"k1"}"#);
    assert_unauthorized(
        app.whoami(&format!("{hs512}.{}.{sig}", parts[1]), &ip(6), UA)
            .await,
    )
    .await;

    // The real token still works: the refusals were about the tokens.
    assert_eq!(
        app.whoami(&token, &ip(6), UA).await.status(),
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_out_key_keeps_verifying_its_tokens_but_mints_none() {
    const OLD: &[u8] = b"the previous signing secret, 32 bytes+";
    const NEW: &str = "the current signing secret, 32 bytes or more";
    let now = unix_now();
    let retired_at = now - 60;
    // k1 signed until a minute ago. (That a retired key stops verifying once its grace is over
    // is tested on TokenKeys with a fake clock: by then its tokens have expired anyway.)
    let app = TestApp::spawn_with(|c| {
        c.jwt_secret = Some(NEW.into());
        c.jwt_kid = "k2".into();
        c.jwt_retired_keys = vec![flashsale::config::RetiredKeyConfig {
            kid: "k1".into(),
            secret: String::from_utf8(OLD.to_vec()).unwrap(),
            retired_at,
        }];
    })
    .await;
    let token = app.customer("rotor@example.com", &ip(31)).await;
    let header: Value =
        serde_json::from_slice(&b64url_decode(token.split('.').next().unwrap())).unwrap();
    assert_eq!(
        header["kid"], "k2",
        "new tokens are signed by the current key"
    );
    let c = claims(&token);
    let user_id: i64 = c["sub"].as_str().unwrap().parse().unwrap();
    let jti = c["jti"].as_str().unwrap();

    // A token k1 signed before it was retired still works, for the real session.
    let old = keys_with("k1", OLD, "flashsale-api");
    let before = old.issue(user_id, jti, retired_at - 30, 900).unwrap();
    assert_eq!(
        app.whoami(&before, &ip(31), UA).await.status(),
        StatusCode::OK
    );
    // k1 cannot mint new tokens (a leaked old key is no master key).
    let minted = old.issue(user_id, jti, now, 900).unwrap();
    let r = app.whoami(&minted, &ip(31), UA).await;
    assert_unauthorized(r).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_early_and_mismatched_tokens_are_assert_unauthorized() {
    let app = TestApp::spawn().await;
    let token = app.customer("frank@example.com", &ip(7)).await;
    let c = claims(&token);
    let user_id: i64 = c["sub"].as_str().unwrap().parse().unwrap();
    let jti = c["jti"].as_str().unwrap();
    let keys = real_keys(&app);
    let now = unix_now();

    // Control: a fresh token signed with the real key for the real session is accepted, so the
    // refusals below are about time and claims, not about the key.
    let fresh = keys.issue(user_id, jti, now, 900).unwrap();
    assert_eq!(
        app.whoami(&fresh, &ip(7), UA).await.status(),
        StatusCode::OK
    );

    let expired = keys.issue(user_id, jti, now - 2000, 900).unwrap();
    let r = app.whoami(&expired, &ip(7), UA).await;
    assert_unauthorized(r).await;

    let not_yet = keys.issue(user_id, jti, now + 600, 900).unwrap();
    let r = app.whoami(&not_yet, &ip(7), UA).await;
    assert_unauthorized(r).await;

    // A validly signed token whose subject is not the session's owner.
    let other_user = keys.issue(user_id + 1000, jti, now, 900).unwrap();
    let r = app.whoami(&other_user, &ip(7), UA).await;
    assert_unauthorized(r).await;

    // A validly signed token for a session that does not exist.
    let no_session = keys.issue(user_id, "no-such-session", now, 900).unwrap();
    let r = app.whoami(&no_session, &ip(7), UA).await;
    assert_unauthorized(r).await;

    // Wrong key id, wrong audience.
    let secret = std::fs::read_to_string(app.data_dir.path().join("jwt-secret")).unwrap();
    let k2 = keys_with("k2", secret.trim().as_bytes(), "flashsale-api");
    let r = app
        .whoami(&k2.issue(user_id, jti, now, 900).unwrap(), &ip(7), UA)
        .await;
    assert_unauthorized(r).await;
    let aud = keys_with("k1", secret.trim().as_bytes(), "elsewhere");
    let r = app
        .whoami(&aud.issue(user_id, jti, now, 900).unwrap(), &ip(7), UA)
        .await;
    assert_unauthorized(r).await;
}

// ---------------------------------------------------------------------------------------------
// Sales
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_sales_and_bad_sales_are_assert_unauthorized() {
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

// ---------------------------------------------------------------------------------------------
// Buying
// ---------------------------------------------------------------------------------------------

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
async fn buy_from_unknown_unstarted_or_ended_sales_is_assert_unauthorized() {
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

// ---------------------------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------------------------

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
    let deadline = Instant::now() + Duration::from_secs(5);
    while remaining(&app, sale).await != 5 {
        assert!(
            Instant::now() < deadline,
            "the expired order's stock did not come back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

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

// ---------------------------------------------------------------------------------------------
// Operations and routing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints_answer() {
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

    // Wait (bounded) until the sale is over for a new buy (probed by another shopper).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
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
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sale never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
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
