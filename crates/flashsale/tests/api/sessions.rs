//! Tokens over HTTP: every protected endpoint needs one, and garbage, forged, `alg: none`,
//! expired, early and mismatched tokens are refused; a rotated-out key keeps verifying the
//! tokens it signed but mints no new ones.

use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

use super::support::{b64url_decode, b64url_encode, claims, keys_with, real_keys, unix_now};
use crate::common::{assert_unauthorized, error_code, ip, remaining, TestApp, UA};

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
async fn garbage_forged_and_alg_none_tokens_are_unauthorized() {
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
async fn expired_early_and_mismatched_tokens_are_unauthorized() {
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
