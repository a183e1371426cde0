//! The load generator: closed loop (C connections, each sending its next request as soon as the
//! previous one is answered) or open loop (requests scheduled at a fixed rate, latency measured
//! from the intended send time, so a slow server cannot hide its queueing: no coordinated
//! omission).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use hyper::StatusCode;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::{sync::Notify, time::Instant};

use crate::{
    client::{ClientError, Conn, Endpoint},
    cpu::{Meter, Spent},
};

/// Highest latency the histogram tracks, in µs (longer ones are clamped).
const MAX_LATENCY_US: u64 = 60_000_000;

/// What to send and how to account for the answers.
pub trait Workload: Send + Sync + 'static {
    /// Per-request context handed back to [`Workload::answered`].
    type Tag: Send;
    /// Appends the next request (complete HTTP/1.1 request bytes) to `request`, which the
    /// caller has emptied, or returns `None` when nothing can be sent now (everything is
    /// settled, or in flight).
    fn next(&self, request: &mut Vec<u8>) -> Option<Self::Tag>;
    /// Accounts for an answer.
    fn answered(&self, tag: Self::Tag, status: StatusCode, body: &[u8]);
    /// The request got no answer (timeout, connection error).
    fn abandoned(&self, tag: Self::Tag);
    /// Whether the load may stop before its duration.
    fn settled(&self) -> bool;
    /// Requests accepted so far (for the progress bar).
    fn accepted(&self) -> u64;
}

/// How to drive the load.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Concurrent connections.
    pub connections: usize,
    /// Longest duration.
    pub duration: Duration,
    /// Open loop at this rate (req/s); `None`: closed loop.
    pub rate: Option<f64>,
    /// Label of the progress bar.
    pub label: String,
    /// The server processes whose CPU the load is measured against (none: not measured).
    pub server_pids: Vec<u32>,
}

/// Answers by status class.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Outcomes {
    /// 2xx (202 for buys).
    pub ok_2xx: u64,
    /// 409 (sold out, limit reached, ended).
    pub conflict_409: u64,
    /// 429 (rate limited).
    pub rate_limited_429: u64,
    /// Other 4xx.
    pub other_4xx: u64,
    /// 5xx.
    pub server_5xx: u64,
    /// Timeouts and connection errors.
    pub errors: u64,
}

impl Outcomes {
    fn add(&mut self, other: &Outcomes) {
        self.ok_2xx += other.ok_2xx;
        self.conflict_409 += other.conflict_409;
        self.rate_limited_429 += other.rate_limited_429;
        self.other_4xx += other.other_4xx;
        self.server_5xx += other.server_5xx;
        self.errors += other.errors;
    }

    fn count(&mut self, status: StatusCode) {
        match status.as_u16() {
            200..=299 => self.ok_2xx += 1,
            409 => self.conflict_409 += 1,
            429 => self.rate_limited_429 += 1,
            400..=499 => self.other_4xx += 1,
            _ => self.server_5xx += 1,
        }
    }

    /// All attempts.
    pub fn total(&self) -> u64 {
        self.ok_2xx
            + self.conflict_409
            + self.rate_limited_429
            + self.other_4xx
            + self.server_5xx
            + self.errors
    }
}

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    /// Latencies in µs.
    pub latency: Histogram<u64>,
    /// Answers by class.
    pub outcomes: Outcomes,
    /// Wall time of the load.
    pub elapsed: Duration,
    /// Whether it stopped because the workload settled.
    pub settled: bool,
    /// CPU readings taken when the clock started (read it again to extend the span).
    pub meter: Meter,
    /// What the servers and the client spent from the start to the end of the load.
    pub spent: Spent,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .unwrap_or_else(|_| unreachable!("constant bounds 1 µs..60 s with 3 digits are valid"))
}

/// Longest wait of a connection with nothing to send before it asks the workload again.
const IDLE_WAIT: Duration = Duration::from_millis(10);

struct Shared {
    attempts: AtomicU64,
    stop: AtomicBool,
    /// Wakes a connection waiting for something to send (an answer came back, or the load
    /// stops).
    idle: Notify,
    /// Connections waiting on `idle`.
    idle_waiters: AtomicUsize,
}

impl Shared {
    /// Stops every connection.
    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.idle.notify_waiters();
    }
}

/// Runs `workload` against `endpoint`.
pub async fn run<W: Workload>(
    endpoint: &Endpoint,
    workload: Arc<W>,
    config: &LoadConfig,
) -> LoadResult {
    let shared = Arc::new(Shared {
        attempts: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        idle: Notify::new(),
        idle_waiters: AtomicUsize::new(0),
    });
    let connections = config.connections.max(1);
    // Connect first: the timed run measures requests, not TCP handshakes (opening hundreds of
    // connections at once can cost a SYN retransmission, a full second, on a small backlog).
    // One that fails to open is opened again by its first request.
    let opening: Vec<_> = (0..connections)
        .map(|_| {
            let mut conn = Conn::new(endpoint);
            tokio::spawn(async move {
                let _ = conn.connect().await;
                conn
            })
        })
        .collect();
    let mut opened = Vec::with_capacity(connections);
    for handle in opening {
        opened.push(handle.await.unwrap_or_else(|_| Conn::new(endpoint)));
    }
    let meter = Meter::start(&config.server_pids);
    let start = Instant::now();
    let deadline = start + config.duration;
    let interval = config
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(connections as f64 / r));
    let offset = config
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));

    let bar = progress_bar(config);
    let ticker = {
        let bar = bar.clone();
        let shared = Arc::clone(&shared);
        let workload = Arc::clone(&workload);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bar.set_position(start.elapsed().as_millis().try_into().unwrap_or(u64::MAX));
                bar.set_message(format!(
                    "attempts {}  accepted {}",
                    shared.attempts.load(Ordering::Relaxed),
                    workload.accepted()
                ));
            }
        })
    };

    let mut tasks = Vec::with_capacity(connections);
    for (i, conn) in opened.into_iter().enumerate() {
        let workload = Arc::clone(&workload);
        let shared = Arc::clone(&shared);
        // Open loop: connection i sends at start + i/R, then every C/R.
        let schedule = interval
            .zip(offset)
            .map(|(every, first)| (every, first * i as u32));
        tasks.push(tokio::spawn(async move {
            drive(conn, workload, shared, start, deadline, schedule).await
        }));
    }
    let mut finished = Vec::with_capacity(tasks.len());
    for t in tasks {
        finished.extend(t.await.ok());
    }
    let elapsed = start.elapsed();
    let spent = meter.read();
    // Merged after the readings: not part of the load.
    let mut latency = histogram();
    let mut outcomes = Outcomes::default();
    for (h, o) in &finished {
        let _ = latency.add(h);
        outcomes.add(o);
    }
    ticker.abort();
    bar.finish_and_clear();
    LoadResult {
        latency,
        outcomes,
        elapsed,
        settled: workload.settled(),
        meter,
        spent,
    }
}

fn progress_bar(config: &LoadConfig) -> ProgressBar {
    let bar = ProgressBar::new(config.duration.as_millis().try_into().unwrap_or(u64::MAX));
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {elapsed} {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(config.label.clone());
    bar
}

/// One connection's loop.
async fn drive<W: Workload>(
    mut conn: Conn,
    workload: Arc<W>,
    shared: Arc<Shared>,
    start: Instant,
    deadline: Instant,
    schedule: Option<(Duration, Duration)>,
) -> (Histogram<u64>, Outcomes) {
    let mut latency = histogram();
    let mut outcomes = Outcomes::default();
    let mut intended = schedule.map(|(_, first)| start + first);
    let mut request = Vec::with_capacity(1024);
    loop {
        if shared.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        if let Some(at) = intended {
            if at >= deadline {
                break;
            }
            tokio::time::sleep_until(at).await;
        }
        request.clear();
        let Some(tag) = workload.next(&mut request) else {
            if workload.settled() {
                shared.stop();
                break;
            }
            // Every remaining user has a request in flight: wait for one to come back (an
            // answer between the failed `next` and this registration is caught by the
            // timeout).
            shared.idle_waiters.fetch_add(1, Ordering::SeqCst);
            let _ = tokio::time::timeout(IDLE_WAIT, shared.idle.notified()).await;
            shared.idle_waiters.fetch_sub(1, Ordering::SeqCst);
            continue;
        };
        let sent = intended.unwrap_or_else(Instant::now);
        if let (Some(at), Some((every, _))) = (intended.as_mut(), schedule) {
            *at += every;
        }
        let answer = conn.exchange(&request).await;
        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        latency.saturating_record(micros.clamp(1, MAX_LATENCY_US));
        shared.attempts.fetch_add(1, Ordering::Relaxed);
        match answer {
            Ok(answer) => {
                outcomes.count(answer.status);
                workload.answered(tag, answer.status, answer.body);
            }
            Err(e) => {
                outcomes.errors += 1;
                workload.abandoned(tag);
                if matches!(e, ClientError::Connect(..)) {
                    // Do not spin on a server that refuses connections.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        if workload.settled() {
            shared.stop();
        } else if shared.idle_waiters.load(Ordering::Relaxed) > 0 {
            shared.idle.notify_one();
        }
    }
    (latency, outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_by_class() {
        let mut o = Outcomes::default();
        for s in [202, 200, 409, 429, 404, 422, 500, 503, 504] {
            o.count(StatusCode::from_u16(s).unwrap());
        }
        assert_eq!(o.ok_2xx, 2);
        assert_eq!(o.conflict_409, 1);
        assert_eq!(o.rate_limited_429, 1);
        assert_eq!(o.other_4xx, 2);
        assert_eq!(o.server_5xx, 3);
        assert_eq!(o.total(), 9);
    }
}
