//! The read workloads: `GET` of one path, forever, by many readers taken round-robin. The
//! `read` scenario asks for the prepared sale (`GET /api/v1/sales/{id}`, public, the sale
//! page's data) as `--users` readers, each with an `X-Forwarded-For` address of its own; the
//! ceiling asks the bare server for `GET /`.
//!
//! Each reader's request is written once, up front; sending one is a copy. No
//! `If-None-Match` is sent, so every answer is the full `200` body.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hyper::{
    header::{HeaderName, HeaderValue, USER_AGENT},
    Method, StatusCode,
};

use crate::{
    client::Endpoint,
    load::Workload,
    prepare::{user_ip, BENCH_USER_AGENT},
};

/// Readers asking for one path.
pub struct Reads {
    /// One complete request per reader.
    requests: Vec<Box<[u8]>>,
    cursor: AtomicUsize,
    ok: AtomicU64,
}

impl Reads {
    /// `readers` readers (at least one) of `path`, each from its own address.
    pub fn new(endpoint: &Endpoint, path: &str, readers: usize) -> Self {
        let requests = (0..readers.max(1))
            .map(|i| {
                let headers = [
                    (USER_AGENT, HeaderValue::from_static(BENCH_USER_AGENT)),
                    (
                        HeaderName::from_static("x-forwarded-for"),
                        HeaderValue::from_str(&user_ip(i))
                            .unwrap_or_else(|_| HeaderValue::from_static("10.0.0.1")),
                    ),
                ];
                let mut request = Vec::new();
                endpoint.write_request(&mut request, &Method::GET, path, &headers, b"");
                request.into_boxed_slice()
            })
            .collect();
        Self::from_requests(requests)
    }

    /// The ceiling's one reader: `GET /` with no other header than `Host`.
    pub fn ceiling(endpoint: &Endpoint) -> Self {
        let mut request = Vec::new();
        endpoint.write_request(&mut request, &Method::GET, "/", &[], b"");
        Self::from_requests(vec![request.into_boxed_slice()])
    }

    fn from_requests(requests: Vec<Box<[u8]>>) -> Self {
        Self {
            requests,
            cursor: AtomicUsize::new(0),
            ok: AtomicU64::new(0),
        }
    }
}

impl Workload for Reads {
    type Tag = ();

    fn next(&self, request: &mut Vec<u8>) -> Option<()> {
        let i = match self.requests.len() {
            1 => 0,
            n => self.cursor.fetch_add(1, Ordering::Relaxed) % n,
        };
        request.extend_from_slice(self.requests.get(i)?);
        Some(())
    }

    fn answered(&self, _: (), status: StatusCode, _: &[u8]) {
        if status.is_success() {
            self.ok.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn abandoned(&self, _: ()) {}

    fn settled(&self) -> bool {
        false
    }

    fn accepted(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Reads) -> String {
        let mut out = Vec::new();
        r.next(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn readers_take_turns_each_with_its_address() {
        let endpoint = Endpoint::from_addr("127.0.0.1:1".parse().unwrap());
        let r = Reads::new(&endpoint, "/api/v1/sales/7", 2);
        let first = text(&r);
        assert!(
            first.starts_with("GET /api/v1/sales/7 HTTP/1.1\r\n"),
            "{first}"
        );
        assert!(first.contains("x-forwarded-for: 10.0.0.1\r\n"), "{first}");
        assert!(
            !first.to_ascii_lowercase().contains("if-none-match"),
            "{first}"
        );
        assert!(first.ends_with("\r\n\r\n"), "{first}");
        assert!(text(&r).contains("x-forwarded-for: 10.0.0.2\r\n"));
        assert_eq!(text(&r), first);
        r.answered((), StatusCode::OK, b"{}");
        r.answered((), StatusCode::NOT_MODIFIED, b"");
        r.answered((), StatusCode::NOT_FOUND, b"");
        assert_eq!(r.accepted(), 1);
        assert!(!r.settled());
    }

    #[test]
    fn the_ceiling_asks_for_the_root() {
        let endpoint = Endpoint::from_addr("127.0.0.1:1".parse().unwrap());
        assert_eq!(
            text(&Reads::ceiling(&endpoint)),
            "GET / HTTP/1.1\r\nhost: 127.0.0.1:1\r\n\r\n"
        );
    }
}
