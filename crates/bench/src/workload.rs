//! The buy workload: users taken round-robin, each buying one unit per attempt until it has a
//! final answer (its limit reached, or a 409).
//!
//! A user's idempotency key names the unit it is buying (`{run}-{user}-{units bought}`), so it
//! changes only after a `202`. An attempt answered `429`, `503` or `504`, or never answered, is
//! retried with the same key, as the API tells clients to: a buy that went through before its
//! `504` then answers with its order, and is counted once, instead of the user buying again
//! under a new key.

use std::sync::{
    atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    Mutex,
};

use http_body_util::Full;
use hyper::{
    body::Bytes,
    header::{HeaderName, HeaderValue},
    Method, Request, StatusCode,
};

use crate::{client::Endpoint, load::Workload, prepare::User};

/// Body of every buy.
const BUY_BODY: &[u8] = br#"{"quantity":1}"#;
/// Marks a user as done in its state word.
const FINAL: u32 = 1 << 31;
/// Marks a user with a request in flight (one at a time per user, like a real buyer).
const BUSY: u32 = 1 << 30;
/// The units part of a state word.
const UNITS: u32 = BUSY - 1;

/// Users rushing one sale.
pub struct Buyers {
    endpoint: Endpoint,
    path: String,
    run: String,
    users: Vec<User>,
    /// Per user: units accepted, plus [`FINAL`] once the user has a final answer and [`BUSY`]
    /// while one of its requests is in flight.
    state: Vec<AtomicU32>,
    limit: u32,
    cursor: AtomicUsize,
    active: AtomicUsize,
    accepted: AtomicU64,
    /// Order ids answered 202.
    order_ids: Mutex<Vec<String>>,
}

impl Buyers {
    /// Users buying in sale `sale` (limit `limit` each); `run` makes idempotency keys unique.
    pub fn new(endpoint: Endpoint, sale: i64, run: &str, users: Vec<User>, limit: u32) -> Self {
        let n = users.len();
        Self {
            endpoint,
            path: format!("/api/v1/sales/{sale}/orders"),
            run: run.to_owned(),
            state: (0..n).map(|_| AtomicU32::new(0)).collect(),
            users,
            limit: limit.max(1),
            cursor: AtomicUsize::new(0),
            active: AtomicUsize::new(n),
            accepted: AtomicU64::new(0),
            order_ids: Mutex::new(Vec::new()),
        }
    }

    /// Order ids answered 202, in answer order.
    pub fn order_ids(&self) -> Vec<String> {
        self.order_ids
            .lock()
            .map(|ids| ids.clone())
            .unwrap_or_default()
    }

    /// The next idle user without a final answer, round-robin, marked busy; `None` when all
    /// have a final answer or are busy.
    fn pick(&self) -> Option<usize> {
        let n = self.users.len();
        for _ in 0..n {
            if self.active.load(Ordering::Relaxed) == 0 {
                return None;
            }
            let i = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
            let before = self.state[i].fetch_or(BUSY, Ordering::AcqRel);
            if before & BUSY == 0 {
                if before & FINAL == 0 {
                    return Some(i);
                }
                self.state[i].fetch_and(!BUSY, Ordering::AcqRel);
            }
        }
        None
    }

    /// Marks user `i` final (once).
    fn finish(&self, i: usize) {
        let before = self.state[i].fetch_or(FINAL, Ordering::Relaxed);
        if before & FINAL == 0 {
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Accounts an answer to user `i` (pure state logic, separated for tests).
    fn account(&self, i: usize, status: StatusCode, order_id: Option<String>) {
        match status {
            StatusCode::ACCEPTED => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                if let (Some(id), Ok(mut ids)) = (order_id, self.order_ids.lock()) {
                    ids.push(id);
                }
                let units = (self.state[i].fetch_add(1, Ordering::Relaxed) & UNITS) + 1;
                if units >= self.limit {
                    self.finish(i);
                }
            }
            // Sold out, limit reached or sale ended: no further attempt can succeed.
            StatusCode::CONFLICT => self.finish(i),
            // 429, 5xx, others: try this user again later.
            _ => {}
        }
        self.state[i].fetch_and(!BUSY, Ordering::AcqRel);
    }
}

fn order_id(body: &Bytes) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["order_id"].as_str().map(str::to_owned)
}

impl Workload for Buyers {
    type Tag = usize;

    fn next(&self) -> Option<(Request<Full<Bytes>>, usize)> {
        let i = self.pick()?;
        // The user is busy (picked), so its units cannot change under us.
        let units = self.state[i].load(Ordering::Acquire) & UNITS;
        let request = HeaderValue::from_str(&format!("{}-{i}-{units}", self.run))
            .ok()
            .and_then(|key| {
                let mut headers: Vec<(HeaderName, HeaderValue)> = self.users[i].headers.to_vec();
                headers.push((HeaderName::from_static("idempotency-key"), key));
                self.endpoint
                    .json(
                        Method::POST,
                        &self.path,
                        &headers,
                        Bytes::from_static(BUY_BODY),
                    )
                    .ok()
            });
        match request {
            Some(r) => Some((r, i)),
            None => {
                // Cannot happen with the headers prepared; give the user up rather than spin.
                self.finish(i);
                self.state[i].fetch_and(!BUSY, Ordering::AcqRel);
                None
            }
        }
    }

    fn abandoned(&self, i: usize) {
        self.state[i].fetch_and(!BUSY, Ordering::AcqRel);
    }

    fn answered(&self, i: usize, status: StatusCode, body: &Bytes) {
        let id = (status == StatusCode::ACCEPTED)
            .then(|| order_id(body))
            .flatten();
        self.account(i, status, id);
    }

    fn settled(&self) -> bool {
        self.active.load(Ordering::Relaxed) == 0
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::{AUTHORIZATION, USER_AGENT};

    fn buyers(n: usize, limit: u32) -> Buyers {
        let user = User {
            headers: [
                (AUTHORIZATION, HeaderValue::from_static("Bearer x")),
                (
                    HeaderName::from_static("x-forwarded-for"),
                    HeaderValue::from_static("10.0.0.1"),
                ),
                (USER_AGENT, HeaderValue::from_static("t")),
            ],
        };
        let endpoint = Endpoint::from_addr("127.0.0.1:1".parse().unwrap());
        Buyers::new(endpoint, 1, "t", vec![user; n], limit)
    }

    #[test]
    fn settles_once_every_user_has_a_final_answer() {
        let b = buyers(3, 2);
        b.account(0, StatusCode::ACCEPTED, Some("a".into()));
        assert!(!b.settled());
        b.account(0, StatusCode::ACCEPTED, Some("b".into()));
        b.account(1, StatusCode::TOO_MANY_REQUESTS, None);
        b.account(1, StatusCode::CONFLICT, None);
        b.account(1, StatusCode::CONFLICT, None);
        assert!(!b.settled());
        // Round-robin skips the finished users 0 and 1, and busy ones.
        assert_eq!(b.pick(), Some(2));
        assert_eq!(b.pick(), None, "user 2 is busy");
        assert!(!b.settled());
        b.account(2, StatusCode::SERVICE_UNAVAILABLE, None);
        assert_eq!(b.pick(), Some(2));
        assert!(!b.settled());
        b.account(2, StatusCode::CONFLICT, None);
        assert!(b.settled());
        assert_eq!(b.pick(), None);
        assert!(b.next().is_none());
        assert_eq!(b.accepted(), 2);
        assert_eq!(b.order_ids(), vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn builds_a_buy_with_the_users_headers() {
        let b = buyers(1, 1);
        let (req, i) = b.next().unwrap();
        assert_eq!(i, 0);
        assert_eq!(req.uri(), "/api/v1/sales/1/orders");
        assert_eq!(req.headers()["x-forwarded-for"], "10.0.0.1");
        assert_eq!(req.headers()["idempotency-key"], "t-0-0");
        assert!(req.headers().contains_key("authorization"));
    }

    #[test]
    fn a_key_is_kept_until_its_unit_is_bought() {
        let b = buyers(2, 3);
        let key = |b: &Buyers| {
            let (req, i) = b.next().unwrap();
            (
                i,
                req.headers()["idempotency-key"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            )
        };
        assert_eq!(key(&b), (0, "t-0-0".to_owned()));
        assert_eq!(key(&b), (1, "t-1-0".to_owned()));
        // A 504 and a lost request: the same unit, the same key.
        b.account(0, StatusCode::GATEWAY_TIMEOUT, None);
        b.abandoned(1);
        assert_eq!(key(&b), (0, "t-0-0".to_owned()));
        assert_eq!(key(&b), (1, "t-1-0".to_owned()));
        // A 202: the next unit has a key of its own; a 429 keeps it.
        b.account(0, StatusCode::ACCEPTED, Some("a".into()));
        b.account(1, StatusCode::TOO_MANY_REQUESTS, None);
        assert_eq!(key(&b), (0, "t-0-1".to_owned()));
        assert_eq!(key(&b), (1, "t-1-0".to_owned()));
    }
}
