//! Personal data never reaches the logs in clear: the real binary runs the API's main flows
//! (register, duplicate registration, refused and accepted logins, buys, bad tokens, logout)
//! with debug logging in JSON, and no line of what it wrote contains a test user's email,
//! password, token or client address; the lines that speak of those users show them masked.

use std::net::SocketAddr;

use crate::common::Api;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};

/// The client address the test's requests come from (through a trusted proxy).
const CLIENT_IP: &str = "203.0.113.77";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_holds_an_email_password_token_or_client_address_in_clear() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_flashsale"))
        .args(["dev", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .env("FLASHSALE_LOG", "debug")
        .env("FLASHSALE_LOG_FORMAT", "json")
        .env("FLASHSALE_ADMIN_EMAIL", crate::common::ADMIN_EMAIL)
        .env("FLASHSALE_ADMIN_PASSWORD", crate::common::ADMIN_PASSWORD)
        .env("FLASHSALE_AUTH__ARGON2__MEMORY_KIB", "256")
        .env("FLASHSALE_AUTH__ARGON2__ITERATIONS", "1")
        .env("FLASHSALE_GATEWAY__TRUSTED_PROXIES", "[\"127.0.0.0/8\"]")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let logs = tokio::spawn(async move {
        let mut all = String::new();
        stderr.read_to_string(&mut all).await.unwrap();
        all
    });
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = stdout.next_line().await.unwrap().expect("dev exited early");
        if let Some(a) = line.strip_prefix("flashsale dev: gateway listening on http://") {
            break a.parse().unwrap();
        }
    };
    let api = Api::new(addr);

    let email = "Private.Person@example.org";
    let secret_password = "hunter2-is-my-password";
    let register = |password: &'static str| {
        api.req(Method::POST, "/api/v1/users", CLIENT_IP)
            .json(&json!({"email": email, "password": password}))
            .send()
    };
    assert_eq!(
        register(secret_password).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    // Again: an existing email (logged, masked).
    assert_eq!(
        register(secret_password).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    // A refused login (logged, masked), then the real one.
    let refused = api
        .req(Method::POST, "/api/v1/sessions", CLIENT_IP)
        .json(&json!({"email": email, "password": "wrong-password-xyz"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let token = api.login_as(email, secret_password, CLIENT_IP).await;
    let sale = api.open_sale(1, 1).await;
    assert_eq!(
        api.buy(sale, &token, CLIENT_IP, "log-1").await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        api.buy(sale, &token, CLIENT_IP, "log-2").await.status(),
        StatusCode::CONFLICT
    );
    // A tampered token and a malformed body that quotes the email.
    let tampered = format!("{token}x");
    let r = api
        .authed(Method::GET, "/api/v1/orders", CLIENT_IP, &tampered)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = api
        .req(Method::POST, "/api/v1/sessions", CLIENT_IP)
        .header("content-type", "application/json")
        .body(format!("{{\"email\": \"{email}\", \"password\": "))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = api
        .authed(
            Method::DELETE,
            "/api/v1/sessions/current",
            CLIENT_IP,
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Stop it (SIGTERM: a graceful drain) and read everything it wrote.
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let logs = logs.await.unwrap();

    let lines: Vec<&str> = logs.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("\"request_id\"")),
        "the request spans were not logged: the check below would see nothing\n{logs}"
    );
    for line in &lines {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    }
    let lower = logs.to_lowercase();
    for (what, secret) in [
        ("email", email.to_lowercase()),
        ("email local part", "private.person".to_owned()),
        ("password", secret_password.to_owned()),
        ("wrong password", "wrong-password-xyz".to_owned()),
        ("admin password", crate::common::ADMIN_PASSWORD.to_owned()),
        ("token", token.to_lowercase()),
        (
            "token signature",
            token.rsplit('.').next().unwrap().to_lowercase(),
        ),
        ("client address", CLIENT_IP.to_owned()),
    ] {
        assert!(
            !lower.contains(&secret),
            "a log line holds the {what} in clear:\n{}",
            logs.lines()
                .filter(|l| l.to_lowercase().contains(&secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // The lines about the account name it masked.
    assert!(
        lines.iter().any(|l| l.contains("login refused")
            && l.to_lowercase().contains("p***@example.org")
            && l.contains("203.0.113.0/24")),
        "the refused login was not logged masked:\n{logs}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("registration of an existing email")
                && l.contains("p***@example.org"))
    );
}
