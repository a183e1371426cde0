//! The buy workload: users taken round-robin, each buying one unit per attempt until it has a
//! final answer (its limit reached, or a 409).
//!
//! A user's idempotency key names the unit it is buying (`{run}-{user}-{units bought}`), so it
//! changes only after a `202`. An attempt answered `429`, `503` or `504`, or never answered, is
//! retried with the same key, as the API tells clients to: a buy that went through before its
//! `504` then answers with its order, and is counted once, instead of the user buying again
//! under a new key.

use std::{
    io::Write as _,
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
        Mutex,
    },
};

use hyper::{Method, StatusCode};

use crate::{
    client::{write_headers, Endpoint},
    load::Workload,
    prepare::User,
};

/// Body of every buy.
const BUY_BODY: &[u8] = br#"{"quantity":1}"#;
/// Marks a user as done in its state word.
const FINAL: u32 = 1 << 31;
/// Marks a user with a request in flight (one at a time per user, like a real buyer).
const BUSY: u32 = 1 << 30;
/// The units part of a state word.
const UNITS: u32 = BUSY - 1;

/// Users rushing one sale.
///
/// Every request is written from parts prepared once: the request line and the headers every
/// buy shares, the user's own headers, then only the idempotency key is formatted per attempt.
pub struct Buyers {
    /// Request line, `Host`, `Content-Type` and `Content-Length` of every buy.
    common: Box<[u8]>,
    run: String,
    /// Per user: its header lines (`Authorization`, `X-Forwarded-For`, `User-Agent`).
    users: Vec<Box<[u8]>>,
    /// Per user: units accepted, plus [`FINAL`] once the user has a final answer and [`BUSY`]
    /// while one of its requests is in flight.
    state: Vec<AtomicU32>,
    limit: u32,
    cursor: AtomicUsize,
    /// Users without a final answer.
    active: AtomicUsize,
    /// Users with a request in flight (all of them active).
    in_flight: AtomicUsize,
    accepted: AtomicU64,
    /// Order ids answered 202.
    order_ids: Mutex<Vec<String>>,
}

impl Buyers {
    /// Users buying in sale `sale` (limit `limit` each); `run` makes idempotency keys unique.
    pub fn new(endpoint: &Endpoint, sale: i64, run: &str, users: Vec<User>, limit: u32) -> Self {
        let n = users.len();
        let mut common = Vec::new();
        let path = format!("/api/v1/sales/{sale}/orders");
        endpoint.write_request(&mut common, &Method::POST, &path, &[], BUY_BODY);
        // Everything before the blank line: the user's headers and the key follow.
        common.truncate(common.len() - BUY_BODY.len() - 2);
        let users = users
            .iter()
            .map(|u| {
                let mut block = Vec::new();
                write_headers(&mut block, &u.headers);
                block.into_boxed_slice()
            })
            .collect();
        Self {
            common: common.into_boxed_slice(),
            run: run.to_owned(),
            state: (0..n).map(|_| AtomicU32::new(0)).collect(),
            users,
            limit: limit.max(1),
            cursor: AtomicUsize::new(0),
            active: AtomicUsize::new(n),
            in_flight: AtomicUsize::new(0),
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
    /// have a final answer or are busy. When every active user is in flight it answers at
    /// once, without scanning the users (the tail of a rush asks this of every idle
    /// connection).
    fn pick(&self) -> Option<usize> {
        let n = self.users.len();
        for _ in 0..n {
            if self.active.load(Ordering::Relaxed) <= self.in_flight.load(Ordering::Relaxed) {
                return None;
            }
            let i = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
            let before = self.state[i].fetch_or(BUSY, Ordering::AcqRel);
            if before & BUSY == 0 {
                if before & FINAL == 0 {
                    self.in_flight.fetch_add(1, Ordering::Relaxed);
                    return Some(i);
                }
                self.state[i].fetch_and(!BUSY, Ordering::AcqRel);
            }
        }
        None
    }

    /// User `i` has no request in flight any more.
    fn release(&self, i: usize) {
        let before = self.state[i].fetch_and(!BUSY, Ordering::AcqRel);
        if before & BUSY != 0 {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
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
        self.release(i);
    }
}

/// The part of a `202` body the bench reads.
#[derive(serde::Deserialize)]
struct Accepted {
    order_id: String,
}

fn order_id(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Accepted>(body)
        .ok()
        .map(|a| a.order_id)
}

impl Workload for Buyers {
    type Tag = usize;

    fn next(&self, request: &mut Vec<u8>) -> Option<usize> {
        let i = self.pick()?;
        // The user is busy (picked), so its units cannot change under us.
        let units = self.state[i].load(Ordering::Acquire) & UNITS;
        request.extend_from_slice(&self.common);
        request.extend_from_slice(&self.users[i]);
        // Writing into a Vec cannot fail.
        let _ = write!(request, "idempotency-key: {}-{i}-{units}\r\n\r\n", self.run);
        request.extend_from_slice(BUY_BODY);
        Some(i)
    }

    fn abandoned(&self, i: usize) {
        self.release(i);
    }

    fn answered(&self, i: usize, status: StatusCode, body: &[u8]) {
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
    use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, USER_AGENT};

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
        Buyers::new(&endpoint, 1, "t", vec![user; n], limit)
    }

    /// The next request as text, and its user.
    fn next(b: &Buyers) -> Option<(String, usize)> {
        let mut out = Vec::new();
        let i = b.next(&mut out)?;
        Some((String::from_utf8(out).unwrap(), i))
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
        assert!(next(&b).is_none());
        assert_eq!(b.accepted(), 2);
        assert_eq!(b.order_ids(), vec!["a".to_owned(), "b".to_owned()]);
    }

    #[test]
    fn with_every_active_user_in_flight_nothing_is_picked() {
        let b = buyers(4, 1);
        assert_eq!(b.pick(), Some(0));
        assert_eq!(b.pick(), Some(1));
        b.account(2, StatusCode::CONFLICT, None);
        b.account(3, StatusCode::CONFLICT, None);
        // Users 0 and 1 are the only active ones, both in flight.
        let cursor = b.cursor.load(Ordering::Relaxed);
        assert_eq!(b.pick(), None);
        assert_eq!(
            b.cursor.load(Ordering::Relaxed),
            cursor,
            "scanned the users"
        );
        b.abandoned(1);
        assert_eq!(b.pick(), Some(1));
        // An answer to a user not in flight (as in the tests above) changes no count.
        b.account(2, StatusCode::CONFLICT, None);
        assert_eq!(b.in_flight.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn builds_a_buy_with_the_users_headers() {
        let b = buyers(1, 1);
        let (req, i) = next(&b).unwrap();
        assert_eq!(i, 0);
        assert_eq!(
            req,
            "POST /api/v1/sales/1/orders HTTP/1.1\r\nhost: 127.0.0.1:1\r\n\
             content-type: application/json\r\ncontent-length: 14\r\n\
             authorization: Bearer x\r\nx-forwarded-for: 10.0.0.1\r\nuser-agent: t\r\n\
             idempotency-key: t-0-0\r\n\r\n{\"quantity\":1}"
        );
    }

    #[test]
    fn only_the_order_id_is_read_from_an_accepted_buy() {
        let body = br#"{"order_id":"o-1","status":"pending","sale_id":1}"#;
        assert_eq!(order_id(body).as_deref(), Some("o-1"));
        assert_eq!(order_id(br#"{"status":"pending"}"#), None);
        assert_eq!(order_id(b"not json"), None);
    }

    #[test]
    fn a_key_is_kept_until_its_unit_is_bought() {
        let b = buyers(2, 3);
        let key = |b: &Buyers| {
            let (req, i) = next(b).unwrap();
            let key = req
                .lines()
                .find_map(|l| l.strip_prefix("idempotency-key: "))
                .unwrap()
                .to_owned();
            (i, key)
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
