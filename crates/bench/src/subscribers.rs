//! The `sse` scenario's subscribers: plain TCP connections to the sale's live stream
//! (`GET /api/v1/sales/{id}/events`), each one a tokio task that writes its request once and then
//! only reads, and what they saw ([`Tally`]).
//!
//! A subscriber has to stay light, since ten thousand of them share the bench's cores with the
//! server they measure: it reads through a fixed 1 KiB buffer ([`Scanner`]) and looks only for the
//! sale's `"remaining":N` text, without decoding the chunked framing, the SSE fields or the JSON.
//! The gateway writes each event as one chunk, so the sale's JSON is never split by a chunk header;
//! a stream that did split it would show as a malformed number, not as a wrong figure.
//!
//! What each subscriber saw is counted per *round*: round `k` is the stock after `k` of the
//! bench's buys (`remaining == stock - k`), round 0 the first event. A subscriber that sees round
//! `k` has seen every round up to `k`; those it jumped over are counted as missed. The subscriber
//! that completes a round (the last one to see it) stamps the time and wakes the bench, so the
//! bench waits on the events themselves.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use hyper::{
    header::{HeaderName, HeaderValue, ACCEPT, USER_AGENT},
    Method,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};

use crate::{
    client::Endpoint,
    prepare::BENCH_USER_AGENT,
    response::{parse_head, Framing, ProtocolError},
};

/// Bytes each subscriber reads into (the response head must fit, and does: about 300 bytes).
pub const READ_BUFFER: usize = 1024;
/// Subscribers connecting (connected but without their first event) at once: enough to keep
/// the server busy, few enough for its accept backlog.
pub const CONNECTING_AT_ONCE: usize = 128;
/// What precedes the number each subscriber looks for.
const PATTERN: &[u8] = b"\"remaining\":";
/// Longest number accepted (`i64::MAX` has 19 digits).
const MAX_DIGITS: usize = 19;
/// The media type of an event stream.
const EVENT_STREAM: &[u8] = b"text/event-stream";

/// Why a subscriber stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The connection could not be opened.
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    /// Reading or writing failed.
    #[error("connection: {0}")]
    Io(#[source] std::io::Error),
    /// The server ended the stream.
    #[error("the server closed the stream")]
    Closed,
    /// The server answered something other than `200`.
    #[error("answered {0} instead of 200")]
    Status(u16),
    /// The answer is not `text/event-stream`.
    #[error("the answer is not an event stream (no Content-Type: text/event-stream)")]
    NotEventStream,
    /// The answer broke HTTP/1.1 or carried a malformed `remaining`.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Finds the `"remaining":N` values in an event stream read piece by piece into a fixed buffer:
/// first the response head (checked: `200`, `text/event-stream`, chunked or until the close),
/// then the body, of which only an unfinished match and the last few bytes are kept between
/// reads.
#[derive(Debug)]
pub struct Scanner {
    buf: [u8; READ_BUFFER],
    len: usize,
    head_done: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            buf: [0; READ_BUFFER],
            len: 0,
            head_done: false,
        }
    }
}

impl Scanner {
    /// Where the next read goes (never empty between [`Scanner::filled`] calls).
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.buf[self.len..]
    }

    /// Takes `n` more bytes read into [`Scanner::spare`] and calls `found` with every
    /// `remaining` value they complete, in stream order.
    pub fn filled(&mut self, n: usize, mut found: impl FnMut(i64)) -> Result<(), StreamError> {
        self.len = (self.len + n).min(READ_BUFFER);
        if !self.head_done {
            let Some(head) = parse_head(&self.buf[..self.len])? else {
                return if self.len == READ_BUFFER {
                    Err(ProtocolError("response head larger than the subscriber's buffer").into())
                } else {
                    Ok(())
                };
            };
            if head.status != 200 {
                return Err(StreamError::Status(head.status));
            }
            if !self.buf[..head.len]
                .windows(EVENT_STREAM.len())
                .any(|w| w.eq_ignore_ascii_case(EVENT_STREAM))
            {
                return Err(StreamError::NotEventStream);
            }
            if !matches!(head.framing, Framing::Chunked | Framing::UntilClose) {
                return Err(
                    ProtocolError("an event stream must be chunked or run to the close").into(),
                );
            }
            self.buf.copy_within(head.len..self.len, 0);
            self.len -= head.len;
            self.head_done = true;
        }
        let mut at = 0;
        let mut unfinished = None;
        while let Some(p) = self.buf[at..self.len]
            .windows(PATTERN.len())
            .position(|w| w == PATTERN)
        {
            let start = at + p;
            let digits_at = start + PATTERN.len();
            let digits = self.buf[digits_at..self.len]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits > MAX_DIGITS {
                return Err(ProtocolError("remaining: too many digits").into());
            }
            let end = digits_at + digits;
            if end == self.len {
                unfinished = Some(start);
                break;
            }
            if digits == 0 || !matches!(self.buf[end], b',' | b'}') {
                return Err(ProtocolError("remaining is not a whole number").into());
            }
            let value = std::str::from_utf8(&self.buf[digits_at..end])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(ProtocolError("remaining is out of range"))?;
            found(value);
            at = end;
        }
        // Keep an unfinished match, or else the bytes that may start the next one.
        let keep = unfinished.unwrap_or_else(|| at.max(self.len.saturating_sub(PATTERN.len() - 1)));
        self.buf.copy_within(keep..self.len, 0);
        self.len -= keep;
        Ok(())
    }
}

/// One round: the subscribers that have seen it and when the first and the last did.
#[derive(Debug, Default)]
struct Round {
    seen: AtomicUsize,
    /// Nanoseconds since [`Tally::epoch`], plus one (0: not yet).
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

/// What the subscribers saw, shared by them and the bench.
#[derive(Debug)]
pub struct Tally {
    stock: i64,
    subscribers: usize,
    /// Round `k`: `remaining == stock - k`, for `k` in `0..=changes`.
    rounds: Box<[Round]>,
    epoch: Instant,
    missed: AtomicU64,
    unexpected: AtomicU64,
    /// Subscribers that stopped before their first event.
    failed: AtomicUsize,
    /// Subscribers that stopped after it.
    disconnected: AtomicUsize,
    first_error: Mutex<Option<String>>,
    /// Wakes the bench: a round completed, or a subscriber stopped.
    progress: Notify,
}

/// When the first and the last subscriber saw a round, if all did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The first subscriber.
    pub first: Instant,
    /// The last one.
    pub last: Instant,
}

impl Tally {
    /// A tally for `subscribers` subscribers of a sale of `stock` units, over `changes` changes.
    pub fn new(stock: i64, changes: usize, subscribers: usize) -> Self {
        Self {
            stock,
            subscribers,
            rounds: (0..=changes).map(|_| Round::default()).collect(),
            epoch: Instant::now(),
            missed: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            failed: AtomicUsize::new(0),
            disconnected: AtomicUsize::new(0),
            first_error: Mutex::new(None),
            progress: Notify::new(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn instant(&self, ns: u64) -> Option<Instant> {
        let ns = ns.checked_sub(1)?;
        self.epoch.checked_add(Duration::from_nanos(ns))
    }

    /// A subscriber whose last round seen is `last` saw `remaining`.
    pub fn observe(&self, last: &mut Option<usize>, remaining: i64) {
        let round = self
            .stock
            .checked_sub(remaining)
            .and_then(|r| usize::try_from(r).ok())
            .filter(|&r| r < self.rounds.len());
        let Some(round) = round else {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let from = last.map_or(0, |l| l + 1);
        if round < from {
            // The same state again (an event for another field, or a repeat).
            return;
        }
        let now = self.now_ns();
        for r in from..=round {
            let entry = &self.rounds[r];
            let before = entry.seen.fetch_add(1, Ordering::AcqRel);
            if before == 0 {
                entry.first_ns.store(now, Ordering::Release);
            }
            if before + 1 == self.subscribers {
                entry.last_ns.store(now, Ordering::Release);
                self.progress.notify_one();
            }
        }
        self.missed
            .fetch_add((round - from) as u64, Ordering::Relaxed);
        *last = Some(round);
    }

    /// A subscriber stopped with `error`, before its first event or after it.
    pub fn stopped(&self, subscribed: bool, index: usize, error: &StreamError) {
        let counter = if subscribed {
            &self.disconnected
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| format!("subscriber {index}: {error}"));
        }
        self.progress.notify_one();
    }

    /// Subscribers that have seen round `round`.
    pub fn seen(&self, round: usize) -> usize {
        self.rounds
            .get(round)
            .map_or(0, |r| r.seen.load(Ordering::Acquire))
    }

    /// When the first and the last subscriber saw round `round`, once every one did.
    pub fn times(&self, round: usize) -> Option<Seen> {
        let r = self.rounds.get(round)?;
        if r.seen.load(Ordering::Acquire) < self.subscribers {
            return None;
        }
        Some(Seen {
            first: self.instant(r.first_ns.load(Ordering::Acquire))?,
            last: self.instant(r.last_ns.load(Ordering::Acquire))?,
        })
    }

    /// Rounds jumped over, summed over the subscribers.
    pub fn missed(&self) -> u64 {
        self.missed.load(Ordering::Relaxed)
    }

    /// `remaining` values outside `stock - changes ..= stock` (the stock moved by something
    /// other than the bench's buys).
    pub fn unexpected(&self) -> u64 {
        self.unexpected.load(Ordering::Relaxed)
    }

    /// Subscribers that stopped before their first event.
    pub fn failed(&self) -> usize {
        self.failed.load(Ordering::Acquire)
    }

    /// Subscribers that stopped after their first event.
    pub fn disconnected(&self) -> usize {
        self.disconnected.load(Ordering::Acquire)
    }

    /// The first subscriber's error, if one stopped.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|e| e.clone())
    }

    /// Waits until every subscriber saw round `round` (`true`), or until that can no longer
    /// happen (too many stopped) or `timeout` passed (`false`).
    pub async fn wait_round(&self, round: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let seen = self.seen(round);
            if seen >= self.subscribers {
                return true;
            }
            if seen + self.failed() + self.disconnected() >= self.subscribers {
                return false;
            }
            // A wake-up given while nobody waited is kept for this wait: none is lost.
            if tokio::time::timeout_at(deadline, self.progress.notified())
                .await
                .is_err()
            {
                return self.seen(round) >= self.subscribers;
            }
        }
    }
}

/// The request every subscriber sends.
pub fn request(endpoint: &Endpoint, path: &str) -> Arc<[u8]> {
    let headers: [(HeaderName, HeaderValue); 2] = [
        (ACCEPT, HeaderValue::from_static("text/event-stream")),
        (USER_AGENT, HeaderValue::from_static(BENCH_USER_AGENT)),
    ];
    let mut out = Vec::new();
    endpoint.write_request(&mut out, &Method::GET, path, &headers, b"");
    out.into()
}

/// Opens `count` subscribers to `path`, [`CONNECTING_AT_ONCE`] at a time, each reporting to
/// `tally`. They run until the set is shut down or dropped.
pub fn open(endpoint: &Endpoint, path: &str, count: usize, tally: &Arc<Tally>) -> JoinSet<()> {
    let request = request(endpoint, path);
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let mut set = JoinSet::new();
    for index in 0..count {
        let (request, tally, gate) = (Arc::clone(&request), Arc::clone(tally), Arc::clone(&gate));
        let addr = endpoint.addr;
        set.spawn(async move {
            let mut permit = Arc::clone(&gate).acquire_owned().await.ok();
            let mut last = None;
            if let Err(e) = subscribe(addr, &request, &tally, &mut last, &mut permit).await {
                tally.stopped(last.is_some(), index, &e);
            }
        });
    }
    set
}

/// One subscriber: connects, asks, then reads until the stream fails; gives back its place
/// among those connecting once it has its first event.
async fn subscribe(
    addr: SocketAddr,
    request: &[u8],
    tally: &Tally,
    last: &mut Option<usize>,
    connecting: &mut Option<OwnedSemaphorePermit>,
) -> Result<(), StreamError> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(StreamError::Connect)?;
    stream.set_nodelay(true).map_err(StreamError::Connect)?;
    stream.write_all(request).await.map_err(StreamError::Io)?;
    let mut scanner = Scanner::default();
    loop {
        let n = stream
            .read(scanner.spare())
            .await
            .map_err(StreamError::Io)?;
        if n == 0 {
            return Err(StreamError::Closed);
        }
        scanner.filled(n, |remaining| tally.observe(last, remaining))?;
        if last.is_some() {
            connecting.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                          cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";

    fn event(remaining: i64) -> Vec<u8> {
        let data = format!(
            "event: sale\ndata: {{\"id\":1,\"name\":\"n\",\"stock\":9,\"remaining\":{remaining},\
             \"per_user_limit\":1}}\n\n"
        );
        format!("{:x}\r\n{data}\r\n", data.len()).into_bytes()
    }

    /// Feeds `bytes` to a scanner in pieces of `piece` bytes; the values found.
    fn scan(bytes: &[u8], piece: usize) -> Result<Vec<i64>, StreamError> {
        let mut s = Scanner::default();
        let mut found = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = s.spare();
            assert!(!room.is_empty());
            let n = piece.min(rest.len()).min(room.len());
            room[..n].copy_from_slice(&rest[..n]);
            s.filled(n, |v| found.push(v))?;
            rest = &rest[n..];
        }
        Ok(found)
    }

    #[test]
    fn values_are_found_however_the_stream_is_cut() {
        let mut stream = HEAD.to_vec();
        for r in [1000, 999, 998] {
            stream.extend(event(r));
            stream.extend_from_slice(b"3\r\n:\n\n\r\n");
        }
        for piece in [1, 2, 7, 12, 13, 64, 500, READ_BUFFER] {
            assert_eq!(
                scan(&stream, piece).unwrap(),
                [1000, 999, 998],
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn only_an_event_stream_is_accepted() {
        let e = scan(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", 64).unwrap_err();
        assert!(matches!(e, StreamError::Status(404)), "{e}");
        let e = scan(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            64,
        )
        .unwrap_err();
        assert!(matches!(e, StreamError::NotEventStream), "{e}");
        let e = scan(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 2\r\n\r\n",
            64,
        )
        .unwrap_err();
        assert!(matches!(e, StreamError::Protocol(_)), "{e}");
        let long = [b"HTTP/1.1 200 OK\r\nx: ".as_slice(), &[b'a'; READ_BUFFER]].concat();
        let e = scan(&long, 100).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn malformed_numbers_are_errors() {
        for (body, why) in [
            (&b"\"remaining\":x,"[..], "not a whole number"),
            (b"\"remaining\":12a", "not a whole number"),
            (b"\"remaining\":-1,", "not a whole number"),
            (b"\"remaining\":99999999999999999999999", "too many digits"),
            (b"\"remaining\":9999999999999999999,", "out of range"),
        ] {
            let e = scan(&[HEAD, body].concat(), 5).unwrap_err();
            assert!(e.to_string().contains(why), "{body:?}: {e}");
        }
    }

    #[test]
    fn rounds_count_each_subscriber_once_and_what_it_skipped() {
        let t = Tally::new(10, 3, 2);
        let (mut a, mut b) = (None, None);
        t.observe(&mut a, 10);
        assert_eq!((t.seen(0), t.times(0)), (1, None));
        t.observe(&mut b, 10);
        let zero = t.times(0).unwrap();
        assert!(zero.first <= zero.last);
        // A repeat of a state already seen changes nothing.
        t.observe(&mut a, 10);
        assert_eq!(t.seen(0), 2);
        t.observe(&mut a, 9);
        t.observe(&mut a, 8);
        // b jumps from 10 to 8: it has seen 9 too, and missed it.
        t.observe(&mut b, 8);
        assert_eq!((t.seen(1), t.seen(2), t.missed()), (2, 2, 1));
        // Outside stock - changes ..= stock: not the bench's buys.
        t.observe(&mut a, 6);
        t.observe(&mut a, 11);
        assert_eq!((t.unexpected(), t.seen(3)), (2, 0));
        assert_eq!(a, Some(2));
    }

    #[tokio::test]
    async fn waiting_ends_when_every_subscriber_saw_it_or_cannot() {
        let t = Arc::new(Tally::new(5, 1, 2));
        let waiter = {
            let t = Arc::clone(&t);
            tokio::spawn(async move { t.wait_round(0, Duration::from_secs(60)).await })
        };
        let (mut a, mut b) = (None, None);
        t.observe(&mut a, 5);
        t.observe(&mut b, 5);
        assert!(waiter.await.unwrap());
        // One of two stops before seeing round 1: it can no longer complete.
        t.observe(&mut a, 4);
        t.stopped(true, 1, &StreamError::Closed);
        assert!(!t.wait_round(1, Duration::from_secs(60)).await);
        assert_eq!(t.disconnected(), 1);
        assert_eq!(
            t.first_error().as_deref(),
            Some("subscriber 1: the server closed the stream")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_times_out() {
        let t = Tally::new(5, 1, 1);
        assert!(!t.wait_round(0, Duration::from_secs(5)).await);
    }

    /// A server that answers every connection with the head and the given values, then holds it.
    async fn streaming(values: Vec<i64>) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::from_addr(listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await.unwrap();
                assert!(request.starts_with(b"GET /events HTTP/1.1\r\n"));
                socket.write_all(HEAD).await.unwrap();
                for &v in &values {
                    socket.write_all(&event(v)).await.unwrap();
                }
                held.push(socket);
            }
        });
        endpoint
    }

    #[tokio::test]
    async fn subscribers_connect_and_report_what_they_read() {
        let endpoint = streaming(vec![7, 6]).await;
        let tally = Arc::new(Tally::new(7, 1, 300));
        let mut set = open(&endpoint, "/events", 300, &tally);
        assert!(tally.wait_round(1, Duration::from_secs(60)).await);
        assert_eq!((tally.seen(0), tally.missed(), tally.failed()), (300, 0, 0));
        set.shutdown().await;
    }

    #[tokio::test]
    async fn a_refused_subscriber_is_reported() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::from_addr(listener.local_addr().unwrap());
        drop(listener);
        let tally = Arc::new(Tally::new(7, 1, 2));
        let _set = open(&endpoint, "/events", 2, &tally);
        assert!(!tally.wait_round(0, Duration::from_secs(60)).await);
        assert_eq!(tally.failed(), 2);
        assert!(tally.first_error().unwrap().contains("connect"));
    }
}
