//! Helpers of the API tests: sale bodies, raw buys, order reads and transitions, and JWT
//! pieces for forging tokens.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flashsale_auth::token::{SigningKey, TokenKeys};
use flashsale_testkit::eventually;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

use crate::common::{body, with_json, TestApp};

/// The IP the harness's `admin()` logs in from (its token is bound to it).
pub(crate) const ADMIN_IP: &str = "10.255.255.254";

pub(crate) fn sale_body(
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

pub(crate) async fn create_sale(app: &TestApp, admin: &str, body: &Value) -> Response {
    app.authed(Method::POST, "/api/v1/admin/sales", ADMIN_IP, admin)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A buy with an explicit JSON body text.
pub(crate) async fn buy_raw(
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
pub(crate) async fn buy_qty(
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

/// The order as `token`'s holder sees it (`GET /api/v1/orders/{id}`).
pub(crate) async fn get_order(
    app: &TestApp,
    token: &str,
    client_ip: &str,
    order: &str,
) -> Response {
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

pub(crate) async fn list_orders(app: &TestApp, token: &str, client_ip: &str) -> Vec<Value> {
    let r = app
        .authed(Method::GET, "/api/v1/orders", client_ip, token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    body(r).await.as_array().unwrap().clone()
}

pub(crate) async fn transition(
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

/// The order once its status is `want` (failing after `limit`, naming the status it had).
pub(crate) async fn wait_for_status(
    app: &TestApp,
    token: &str,
    client_ip: &str,
    order: &str,
    want: &str,
    limit: Duration,
) -> Value {
    eventually(
        format!("order {order} to be {want}"),
        limit,
        || async move {
            let r = get_order(app, token, client_ip, order).await;
            assert_eq!(r.status(), StatusCode::OK);
            let o = body(r).await;
            if o["status"] == want {
                Ok(o)
            } else {
                Err(format!("status {}", o["status"]))
            }
        },
    )
    .await
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (enough for JWT parts).
pub(crate) fn b64url_encode(data: &[u8]) -> String {
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

pub(crate) fn b64url_decode(s: &str) -> Vec<u8> {
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
pub(crate) fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&b64url_decode(payload)).unwrap()
}

/// The gateway's real signing keys, from the secret `flashsale dev` keeps in its data dir.
pub(crate) fn real_keys(app: &TestApp) -> TokenKeys {
    let secret = std::fs::read_to_string(app.data_dir.path().join("jwt-secret")).unwrap();
    keys_with("k1", secret.trim().as_bytes(), "flashsale-api")
}

/// Signing keys with this kid, secret and audience (issuer `flashsale`, 15-minute tokens).
pub(crate) fn keys_with(kid: &str, secret: &[u8], audience: &str) -> TokenKeys {
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

pub(crate) fn unix_now() -> i64 {
    Utc::now().timestamp()
}
