//! The ceiling: a bare axum handler answering a small fixed JSON body on loopback, in its own
//! 2-worker runtime on its own threads, driven by the same client. What the machine can do for
//! HTTP at all, with this client, is the yardstick the real scenarios are reported against.

use std::{net::SocketAddr, sync::Arc};

use axum::{routing::get, Json, Router};
use http_body_util::Full;
use hyper::{body::Bytes, Method, Request, StatusCode};
use tokio::sync::oneshot;

use crate::{client::Endpoint, error::BenchError, load::Workload};

/// Name of the ceiling server's threads (so their CPU time can be told apart from the client's).
pub const THREAD_NAME: &str = "ceiling-srv";

/// A running ceiling server; stops when dropped.
pub struct CeilingServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CeilingServer {
    /// Starts the server on `127.0.0.1:0`.
    pub fn start() -> Result<Self, BenchError> {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(THREAD_NAME)
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = addr_tx.send(listener.local_addr().map_err(|e| e.to_string()));
                    let app = Router::new().route(
                        "/",
                        get(|| async {
                            Json(serde_json::json!({"ok": true, "service": "ceiling"}))
                        }),
                    );
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stop_rx.await;
                        })
                        .await;
                });
            })
            .map_err(|e| BenchError::Ceiling(e.to_string()))?;
        let addr = addr_rx
            .recv()
            .map_err(|e| BenchError::Ceiling(e.to_string()))?
            .map_err(BenchError::Ceiling)?;
        Ok(Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for CeilingServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Open client connections may keep graceful shutdown waiting; do not block on them.
        drop(self.thread.take());
    }
}

/// GET / forever.
pub struct Ceiling {
    endpoint: Endpoint,
    answered: std::sync::atomic::AtomicU64,
}

impl Ceiling {
    /// The workload against `endpoint`.
    pub fn new(endpoint: Endpoint) -> Arc<Self> {
        Arc::new(Self {
            endpoint,
            answered: Default::default(),
        })
    }
}

impl Workload for Ceiling {
    type Tag = ();

    fn next(&self) -> Option<(Request<Full<Bytes>>, ())> {
        let request = self
            .endpoint
            .request(Method::GET, "/")
            .body(Full::new(Bytes::new()))
            .ok()?;
        Some((request, ()))
    }

    fn answered(&self, _: (), status: StatusCode, _: &Bytes) {
        if status.is_success() {
            self.answered
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn abandoned(&self, _: ()) {}

    fn settled(&self) -> bool {
        false
    }

    fn accepted(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Relaxed)
    }
}
