//! Authentication and anti-brush limits over HTTP, on both backends: every case runs once
//! with sessions and limits in process and once with both in the real Redis (its own key
//! prefix per test; skipped with a message without Redis, a failure under `CI=true`).
//!
//! Token forgery, algorithm confusion, expiry and key rotation are tested on `TokenKeys`
//! itself (flashsale-auth) and end to end in `api.rs`; here are the behaviours that depend on
//! where sessions and counters live: login, logout, binding a token to its client, and the
//! limits on buy, login and registration.

use std::{sync::Arc, time::Instant};

use crate::common::{
    accepted, assert_unauthorized, body, error_code, ip, remaining, with_json, Backend, TestApp,
    PASSWORD, UA,
};
use chrono::{DateTime, Utc};
use reqwest::{header, Method, Response, StatusCode};
use serde_json::json;

/// Runs each case against an app on each backend, cleaning Redis up even when the case fails.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run(super::Backend::Memory, |app| Box::pin(async move {
                        super::$case(&app).await
                    })).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::run(super::Backend::Redis, |app| Box::pin(async move {
                        super::$case(&app).await
                    })).await;
                }
            )*
        }
    };
}

type Case = fn(Arc<TestApp>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn run(backend: Backend, case: Case) {
    let Some(app) = TestApp::spawn_on(backend).await else {
        return;
    };
    let app = Arc::new(app);
    let redis = app.redis.clone();
    let outcome = tokio::spawn(case(Arc::clone(&app))).await;
    drop(app);
    if let Some(redis) = redis {
        redis.cleanup().await;
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

on_both_backends!(
    login_returns_a_token_and_hides_which_part_was_wrong,
    logout_revokes_only_the_current_token,
    token_replayed_from_another_client_is_refused,
    one_user_is_limited_to_three_attempts_per_second_per_sale,
    one_ip_is_limited_to_ten_attempts_per_minute,
    login_is_throttled_per_account_from_any_address,
    login_is_throttled_per_address_across_accounts,
    registration_is_throttled_per_address,
    answers_from_memory_spend_no_rate_limit,
);

fn retry_after(r: &Response) -> u64 {
    r.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn login(app: &TestApp, email: &str, password: &str, client_ip: &str) -> Response {
    app.req(Method::POST, "/api/v1/sessions", client_ip)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn login_returns_a_token_and_hides_which_part_was_wrong(app: &TestApp) {
    assert_eq!(
        app.register("carol@example.com", &ip(3)).await.status(),
        StatusCode::ACCEPTED
    );
    let login = |email: &str, password: &str| {
        app.req(Method::POST, "/api/v1/sessions", &ip(3))
            .json(&json!({"email": email, "password": password}))
            .send()
    };

    let before = Utc::now();
    let r = login("carol@example.com", PASSWORD).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let b = body(r).await;
    let token = b["token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let expires_at = DateTime::parse_from_rfc3339(b["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert!(
        expires_at > before + chrono::Duration::minutes(14),
        "{expires_at}"
    );
    assert!(
        expires_at <= Utc::now() + chrono::Duration::minutes(15) + chrono::Duration::seconds(1)
    );
    // The token works.
    assert_eq!(app.whoami(token, &ip(3), UA).await.status(), StatusCode::OK);

    // Wrong password, unknown email, malformed email: one indistinguishable answer.
    let mut answers = Vec::new();
    for (email, password) in [
        ("carol@example.com", "wrong-password"),
        ("nobody@example.com", PASSWORD),
        ("not-an-email", PASSWORD),
    ] {
        let r = login(email, password).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let e = body(r).await["error"].clone();
        answers.push((e["code"].clone(), e["message"].clone()));
    }
    assert_eq!(answers[0].0, "unauthorized");
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");

    // Malformed JSON: 400.
    let r = with_json(app.req(Method::POST, "/api/v1/sessions", &ip(3)), "{")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r, StatusCode::BAD_REQUEST).await,
        "malformed_json"
    );
}

async fn logout_revokes_only_the_current_token(app: &TestApp) {
    let token = app.customer("dave@example.com", &ip(4)).await;
    let other = app.login_as("dave@example.com", PASSWORD, &ip(4)).await;
    assert_eq!(
        app.whoami(&token, &ip(4), UA).await.status(),
        StatusCode::OK
    );

    let r = app
        .authed(Method::DELETE, "/api/v1/sessions/current", &ip(4), &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let r = app.whoami(&token, &ip(4), UA).await;
    assert_unauthorized(r).await;
    let r = app
        .authed(Method::DELETE, "/api/v1/sessions/current", &ip(4), &token)
        .send()
        .await
        .unwrap();
    assert_unauthorized(r).await;
    // Without a token there is nothing to log out.
    let r = app
        .req(Method::DELETE, "/api/v1/sessions/current", &ip(4))
        .send()
        .await
        .unwrap();
    assert_unauthorized(r).await;
    // The user's other session is untouched.
    assert_eq!(
        app.whoami(&other, &ip(4), UA).await.status(),
        StatusCode::OK
    );
}

async fn token_replayed_from_another_client_is_refused(app: &TestApp) {
    let sale = app.open_sale(10, 1).await;
    let token = app.customer("gina@example.com", &ip(8)).await;

    // Another IP.
    let r = app.whoami(&token, &ip(9), UA).await;
    assert_unauthorized(r).await;
    // Another User-Agent, and none at all.
    let r = app.whoami(&token, &ip(8), "curl/8.0").await;
    assert_unauthorized(r).await;
    let r = app
        .client
        .get(app.url("/api/v1/orders"))
        .header("x-forwarded-for", ip(8))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_unauthorized(r).await;
    // A stolen token cannot buy from elsewhere either, and takes no stock.
    let r = app
        .raw(
            Method::POST,
            &format!("/api/v1/sales/{sale}/orders"),
            &ip(9),
            UA,
        )
        .bearer_auth(&token)
        .header("idempotency-key", "stolen")
        .json(&json!({"quantity": 1}))
        .send()
        .await
        .unwrap();
    assert_unauthorized(r).await;
    assert_eq!(remaining(app, sale).await, 10);

    // The owner, from the original client, is served. A client-written hop to the left of the
    // trusted proxy's entry changes nothing: the right-most untrusted address is the client.
    assert_eq!(
        app.whoami(&token, &ip(8), UA).await.status(),
        StatusCode::OK
    );
    let spoofed = format!("203.0.113.7, {}", ip(8));
    assert_eq!(
        app.whoami(&token, &spoofed, UA).await.status(),
        StatusCode::OK
    );
    let spoofed = format!("{}, 203.0.113.7", ip(8));
    let r = app.whoami(&token, &spoofed, UA).await;
    assert_unauthorized(r).await;
}

async fn one_user_is_limited_to_three_attempts_per_second_per_sale(app: &TestApp) {
    let sale = app.open_sale(100, 10).await;
    let other_sale = app.open_sale(100, 10).await;
    let token = app.customer("sam@example.com", &ip(22)).await;
    // Warm the session cache so the burst is quick.
    assert_eq!(
        app.whoami(&token, &ip(22), UA).await.status(),
        StatusCode::OK
    );

    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut retry_after = Vec::new();
    for n in 0..10 {
        let r = app.buy(sale, &token, &ip(22), &format!("burst-{n}")).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let secs: u64 = r.headers()[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            retry_after.push(secs);
            assert_eq!(
                error_code(r, StatusCode::TOO_MANY_REQUESTS).await,
                "rate_limited"
            );
            statuses.push(StatusCode::TOO_MANY_REQUESTS);
        } else {
            statuses.push(r.status());
        }
    }
    let elapsed = started.elapsed();
    let passed = statuses
        .iter()
        .filter(|s| **s != StatusCode::TOO_MANY_REQUESTS)
        .count();
    // GCRA at 3/s with a burst of 3: at most 3 plus one per 333 ms the burst took.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let allowed = 3 + (elapsed.as_secs_f64() * 3.0).floor() as usize;
    assert!(
        passed <= allowed,
        "{passed} passed in {elapsed:?}: {statuses:?}"
    );
    assert!(passed >= 3, "the first three attempts pass: {statuses:?}");
    assert!(
        !retry_after.is_empty(),
        "no 429 in a burst of 10 ({elapsed:?}): {statuses:?}"
    );
    assert!(
        retry_after.iter().all(|s| (1..=2).contains(s)),
        "{retry_after:?}"
    );
    assert!(statuses
        .iter()
        .all(|s| *s == StatusCode::ACCEPTED || *s == StatusCode::TOO_MANY_REQUESTS));
    // Refused attempts took nothing.
    assert_eq!(
        remaining(app, sale).await,
        100 - i64::try_from(passed).unwrap()
    );

    // The limit is per sale: the same user may buy from another sale at once (logged in from
    // another IP, since the burst spent this IP's ten attempts a minute).
    let again = app.login_as("sam@example.com", PASSWORD, &ip(122)).await;
    accepted(app.buy(other_sale, &again, &ip(122), "other-sale").await).await;
}

async fn one_ip_is_limited_to_ten_attempts_per_minute(app: &TestApp) {
    let sale = app.open_sale(100, 1).await;
    let shared_ip = ip(23);
    let mut tokens = Vec::new();
    for n in 0..12 {
        // Registered from their own addresses (registration is limited per IP too), then
        // logged in from the shared one.
        let email = format!("user{n}@shared.example.com");
        assert_eq!(
            app.register(&email, &ip(1000 + n)).await.status(),
            StatusCode::ACCEPTED
        );
        tokens.push(app.login_as(&email, PASSWORD, &shared_ip).await);
    }
    for t in &tokens {
        assert_eq!(app.whoami(t, &shared_ip, UA).await.status(), StatusCode::OK);
    }

    let started = Instant::now();
    let mut passed = 0usize;
    let mut limited = 0usize;
    for (n, t) in tokens.iter().enumerate() {
        let r = app.buy(sale, t, &shared_ip, &format!("ip-{n}")).await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let secs: u64 = r.headers()[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&secs), "Retry-After {secs}");
            assert_eq!(
                error_code(r, StatusCode::TOO_MANY_REQUESTS).await,
                "rate_limited"
            );
            limited += 1;
        } else {
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            passed += 1;
        }
    }
    let elapsed = started.elapsed();
    // GCRA at 10/min with a burst of 10: one more per 6 s the attempts took.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let allowed = 10 + (elapsed.as_secs_f64() / 6.0).floor() as usize;
    assert!(passed >= 10, "the first ten attempts pass ({passed})");
    assert!(passed <= allowed, "{passed} passed in {elapsed:?}");
    assert!(
        limited >= 1,
        "no 429 for 12 attempts from one IP in {elapsed:?}"
    );
    assert_eq!(
        remaining(app, sale).await,
        100 - i64::try_from(passed).unwrap()
    );

    // Another IP has its own budget.
    let other = app.customer("elsewhere@example.com", &ip(24)).await;
    accepted(app.buy(sale, &other, &ip(24), "ip-other").await).await;
}

async fn login_is_throttled_per_account_from_any_address(app: &TestApp) {
    let victim = "victim@example.com";
    app.customer(victim, &ip(40)).await; // one login spent
                                         // Guessing from many addresses: the account's budget (5 a minute) runs out all the same.
    let mut unauthorized = 0;
    let mut limited = Vec::new();
    for n in 0..10 {
        let r = login(app, victim, &format!("guess-{n}-password"), &ip(41 + n)).await;
        match r.status() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = retry_after(&r);
                assert!((1..=60).contains(&wait), "Retry-After {wait}");
                assert_eq!(
                    error_code(r, StatusCode::TOO_MANY_REQUESTS).await,
                    "rate_limited"
                );
                limited.push(wait);
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        unauthorized, 4,
        "5 logins a minute per account, one already spent"
    );
    assert_eq!(limited.len(), 6);
    // While throttled, even the right password waits: the throttle does not tell a guesser
    // which attempt was right.
    let r = login(app, victim, PASSWORD, &ip(60)).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // Unknown accounts are throttled the same way (no enumeration through the limits).
    let mut statuses = Vec::new();
    for n in 0..7 {
        statuses.push(
            login(app, "nobody@example.com", PASSWORD, &ip(70 + n))
                .await
                .status(),
        );
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::UNAUTHORIZED)
            .count(),
        5,
        "{statuses:?}"
    );
    // Other accounts are not affected.
    app.customer("bystander@example.com", &ip(61)).await;
}

async fn login_is_throttled_per_address_across_accounts(app: &TestApp) {
    // Credential stuffing: one address, many accounts. 20 a minute per address.
    let stuffer = ip(80);
    let mut passed = 0;
    let mut limited = 0;
    let started = std::time::Instant::now();
    for n in 0..25 {
        let r = login(app, &format!("list{n}@example.com"), PASSWORD, &stuffer).await;
        match r.status() {
            StatusCode::UNAUTHORIZED => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // The burst of 20, plus one more for every 3 s the attempts took (none on a quick run).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let refilled = (started.elapsed().as_secs_f64() / 3.0).floor() as usize;
    assert!(
        (20..=20 + refilled).contains(&passed) && passed + limited == 25,
        "{passed} passed, {limited} limited, {refilled} refilled"
    );
    // Another address is served.
    app.customer("honest@example.com", &ip(81)).await;
}

async fn registration_is_throttled_per_address(app: &TestApp) {
    let from = ip(90);
    let mut statuses = Vec::new();
    for n in 0..12 {
        let r = app.register(&format!("bulk{n}@example.com"), &from).await;
        statuses.push(r.status());
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(statuses[11], StatusCode::TOO_MANY_REQUESTS);
    // A refused registration created nothing.
    let r = login(app, "bulk11@example.com", PASSWORD, &ip(91)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Bad input is refused before it spends the budget of another address.
    let r = app
        .req(Method::POST, "/api/v1/users", &ip(92))
        .json(&json!({"email": "not-an-email", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_from_an_untrusted_peer_is_ignored() {
    // No trusted proxy: every client of this gateway is the TCP peer (127.0.0.1), whatever
    // address it writes in X-Forwarded-For, so claimed addresses share one budget.
    let app = TestApp::spawn_with(|c| c.gateway.trusted_proxies.clear()).await;
    let mut statuses = Vec::new();
    for n in 0..11 {
        statuses.push(
            app.register(&format!("spoof{n}@example.com"), &ip(100 + n))
                .await
                .status(),
        );
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        10,
        "{statuses:?}"
    );
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS);

    // Behind a trusted proxy the same claims are believed: each address has its own budget.
    let trusting = TestApp::spawn().await;
    for n in 0..11 {
        let r = trusting
            .register(&format!("spoof{n}@example.com"), &ip(100 + n))
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
}

async fn answers_from_memory_spend_no_rate_limit(app: &TestApp) {
    let sale = app.open_sale(1, 1).await;
    let first = app.customer("first@example.com", &ip(110)).await;
    accepted(app.buy(sale, &first, &ip(110), "only").await).await;
    // Sold out: ten attempts in a burst are all answered 409 by the gateway — none of them
    // spends the 3-a-second or 10-a-minute budgets, so none is 429.
    let late = app.customer("late@example.com", &ip(111)).await;
    let mut codes = Vec::new();
    for n in 0..10 {
        let r = app.buy(sale, &late, &ip(111), &format!("late-{n}")).await;
        codes.push(error_code(r, StatusCode::CONFLICT).await);
    }
    assert!(codes.iter().all(|c| c == "sold_out"), "{codes:?}");
    // The budget is intact for a sale that has stock.
    let other = app.open_sale(10, 5).await;
    for n in 0..3 {
        accepted(app.buy(other, &late, &ip(111), &format!("other-{n}")).await).await;
    }
}
