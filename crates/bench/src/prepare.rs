//! Preparation (not timed): register and log in the users, each from its own address, and open
//! the sale as the admin.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use hyper::{
    header::{HeaderName, HeaderValue, AUTHORIZATION, USER_AGENT},
    Method, StatusCode,
};
use serde_json::{json, Value};

use crate::{
    client::{Conn, Endpoint},
    error::BenchError,
};

/// The User-Agent every simulated user sends (sessions are bound to IP + User-Agent).
pub const BENCH_USER_AGENT: &str = "flashsale-bench/0.1";
/// Password of every bench user.
const USER_PASSWORD: &str = "bench-password-123";
/// How often a preparation request answered 429/503/504 is retried.
const PREP_RETRIES: u32 = 20;

/// A logged-in simulated user: the headers every one of its requests carries.
#[derive(Debug, Clone)]
pub struct User {
    /// `Authorization`, `X-Forwarded-For` and `User-Agent`.
    pub headers: [(HeaderName, HeaderValue); 3],
}

/// The `X-Forwarded-For` address of user `index`: `10.a.b.c` from `index + 1`.
pub fn user_ip(index: usize) -> String {
    let n = index + 1;
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

fn xff() -> HeaderName {
    HeaderName::from_static("x-forwarded-for")
}

/// Sends one JSON request and parses the JSON answer.
pub async fn call(
    conn: &mut Conn,
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: Option<&Value>,
) -> Result<(StatusCode, Value), BenchError> {
    let bytes = body.map(Value::to_string).unwrap_or_default();
    let (status, body) = conn
        .send(endpoint, &method, path, headers, bytes.as_bytes())
        .await?;
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok((status, value))
}

/// [`call`], retried with backoff while the server answers 429, 503 or 504 (production argon2
/// makes logins slow enough to exceed the gateway's time budget when many run at once).
async fn call_retrying(
    conn: &mut Conn,
    endpoint: &Endpoint,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: &Value,
) -> Result<(StatusCode, Value), BenchError> {
    let mut attempt = 0;
    loop {
        let (status, value) = call(conn, endpoint, Method::POST, path, headers, Some(body)).await?;
        let transient = matches!(status.as_u16(), 429 | 503 | 504);
        if !transient || attempt >= PREP_RETRIES {
            return Ok((status, value));
        }
        attempt += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempt))).await;
    }
}

fn unexpected(what: impl Into<String>, status: StatusCode, body: &Value) -> BenchError {
    let mut body = body.to_string();
    body.truncate(300);
    BenchError::Unexpected {
        what: what.into(),
        status: status.as_u16(),
        body,
    }
}

fn bearer(token: &Value, what: &str) -> Result<HeaderValue, BenchError> {
    let token = token["token"].as_str().unwrap_or_default();
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| BenchError::Unexpected {
        what: what.to_owned(),
        status: 201,
        body: "token is not a valid header value".to_owned(),
    })
}

/// Registers (or reuses) and logs in one user.
async fn prepare_user(
    conn: &mut Conn,
    endpoint: &Endpoint,
    run: &str,
    index: usize,
) -> Result<User, BenchError> {
    let ip = HeaderValue::from_str(&user_ip(index))
        .map_err(|_| BenchError::Usage("bad user ip".to_owned()))?;
    let ua = HeaderValue::from_static(BENCH_USER_AGENT);
    let headers = [(xff(), ip.clone()), (USER_AGENT, ua.clone())];
    let creds =
        json!({"email": format!("bench-{run}-{index}@bench.example"), "password": USER_PASSWORD});
    let (status, body) = call_retrying(conn, endpoint, "/api/v1/users", &headers, &creds).await?;
    // 202 whether the user is new or already registered by an earlier run.
    if status != StatusCode::ACCEPTED {
        return Err(unexpected(
            format!("registering user {index}"),
            status,
            &body,
        ));
    }
    let (status, body) =
        call_retrying(conn, endpoint, "/api/v1/sessions", &headers, &creds).await?;
    if status != StatusCode::CREATED && status != StatusCode::OK {
        return Err(unexpected(
            format!("logging in user {index}"),
            status,
            &body,
        ));
    }
    let token = bearer(&body, "login")?;
    Ok(User {
        headers: [(AUTHORIZATION, token), (xff(), ip), (USER_AGENT, ua)],
    })
}

/// Registers and logs in `count` users, `parallelism` at a time. `run` makes the emails unique
/// to this invocation.
pub async fn users(
    endpoint: &Endpoint,
    run: &str,
    count: usize,
    parallelism: usize,
) -> Result<Vec<User>, BenchError> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..parallelism.clamp(1, count.max(1)) {
        let next = Arc::clone(&next);
        let endpoint = endpoint.clone();
        let run = run.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&endpoint).await?;
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, BenchError>(done);
                }
                done.push((i, prepare_user(&mut conn, &endpoint, &run, i).await?));
            }
        }));
    }
    let mut all: Vec<Option<User>> = vec![None; count];
    for t in tasks {
        let done = t
            .await
            .map_err(|e| BenchError::Usage(format!("preparation task failed: {e}")))??;
        for (i, u) in done {
            if let Some(slot) = all.get_mut(i) {
                *slot = Some(u);
            }
        }
    }
    Ok(all.into_iter().flatten().collect())
}

/// Logs in as the admin and opens a sale (started a minute ago, ending in an hour). Returns its id.
pub async fn open_sale(
    endpoint: &Endpoint,
    email: &str,
    password: &str,
    stock: u64,
    limit: u32,
) -> Result<i64, BenchError> {
    let mut conn = Conn::open(endpoint).await?;
    let ua = [(USER_AGENT, HeaderValue::from_static(BENCH_USER_AGENT))];
    let (status, body) = call(
        &mut conn,
        endpoint,
        Method::POST,
        "/api/v1/sessions",
        &ua,
        Some(&json!({"email": email, "password": password})),
    )
    .await?;
    if !status.is_success() {
        return Err(unexpected("admin login", status, &body));
    }
    let token = bearer(&body, "admin login")?;
    let now = chrono::Utc::now();
    let sale = json!({
        "name": "flashsale bench",
        "price_cents": 100,
        "stock": stock,
        "per_user_limit": limit,
        "starts_at": now - chrono::Duration::minutes(1),
        "ends_at": now + chrono::Duration::hours(1),
    });
    let headers = [ua[0].clone(), (AUTHORIZATION, token)];
    let (status, body) = call(
        &mut conn,
        endpoint,
        Method::POST,
        "/api/v1/admin/sales",
        &headers,
        Some(&sale),
    )
    .await?;
    if status != StatusCode::CREATED {
        return Err(unexpected("creating the sale", status, &body));
    }
    body["id"]
        .as_i64()
        .ok_or_else(|| unexpected("creating the sale (no id)", status, &body))
}

/// The sale's `remaining` as the gateway reports it.
pub async fn remaining(endpoint: &Endpoint, sale: i64) -> Result<i64, BenchError> {
    let mut conn = Conn::open(endpoint).await?;
    let path = format!("/api/v1/sales/{sale}");
    let (status, body) = call(&mut conn, endpoint, Method::GET, &path, &[], None).await?;
    match body["remaining"].as_i64() {
        Some(r) if status == StatusCode::OK => Ok(r),
        _ => Err(unexpected("reading the sale", status, &body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ips_are_distinct_and_valid() {
        assert_eq!(user_ip(0), "10.0.0.1");
        assert_eq!(user_ip(255), "10.0.1.0");
        let ips: std::collections::HashSet<_> = (0..100_000).map(user_ip).collect();
        assert_eq!(ips.len(), 100_000);
        assert!(ips.iter().all(|ip| ip.parse::<std::net::IpAddr>().is_ok()));
    }
}
