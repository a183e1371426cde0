//! The request budget and load shedding, against a real gRPC downstream that is too slow.
//!
//! The gateway runs for real (its router, middleware and gRPC clients) in front of an
//! inventory server whose `GetSale` sleeps far past the budget and records what it saw: the
//! `grpc-timeout` it was given, and whether its handler was cancelled (dropped before it
//! finished). Ports are ephemeral.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use flashsale_gateway::GatewayConfig;
use flashsale_proto::inventory::{self as pb, inventory_server::Inventory};
use flashsale_registry::deadline::parse_grpc_timeout;
use flashsale_testkit::eventually;
use parking_lot::Mutex;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

mod support;

/// An inventory whose `GetSale` takes 5 s.
#[derive(Clone, Default)]
struct SlowInventory {
    started: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    timeouts: Arc<Mutex<Vec<Duration>>>,
}

/// Counts a handler dropped before it finished.
struct Cancelled(Option<Arc<AtomicUsize>>);

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(count) = self.0.take() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tonic::async_trait]
impl Inventory for SlowInventory {
    type WatchStockStream = futures::stream::Empty<Result<pb::StockEvent, Status>>;
    type WatchSalesStream = futures::stream::Empty<Result<pb::SalesUpdate, Status>>;

    async fn watch_sales(
        &self,
        _: Request<pb::WatchSalesRequest>,
    ) -> Result<Response<Self::WatchSalesStream>, Status> {
        Ok(Response::new(futures::stream::empty()))
    }

    async fn watch_stock(
        &self,
        _: Request<pb::WatchStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn create_sale(
        &self,
        _: Request<pb::CreateSaleRequest>,
    ) -> Result<Response<pb::Sale>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn get_sale(
        &self,
        request: Request<pb::GetSaleRequest>,
    ) -> Result<Response<pb::GetSaleReply>, Status> {
        if let Some(timeout) = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
        {
            self.timeouts.lock().push(timeout);
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        let mut guard = Cancelled(Some(Arc::clone(&self.cancelled)));
        tokio::time::sleep(Duration::from_secs(5)).await;
        guard.0 = None;
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::GetSaleReply { sale: None }))
    }

    async fn list_sales(
        &self,
        _: Request<pb::ListSalesRequest>,
    ) -> Result<Response<pb::ListSalesReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn reserve(
        &self,
        _: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn reserve_many(
        &self,
        _: Request<pb::ReserveManyRequest>,
    ) -> Result<Response<pb::ReserveManyReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn release(
        &self,
        _: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseReply>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn reconcile(
        &self,
        _: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::ReconcileReply>, Status> {
        Err(Status::unimplemented("test"))
    }
}

/// The slow inventory and a gateway in front of it; returns the gateway's address.
async fn start(config: GatewayConfig) -> (SocketAddr, SlowInventory) {
    let inventory = SlowInventory::default();
    // Auth and order are not needed: every route used here only calls inventory.
    let grpc = support::serve_inventory(inventory.clone()).await;
    (support::serve_gateway(config, &grpc).await, inventory)
}

/// Waits (5 s at most) until `ok` holds.
async fn poll_until(what: &str, ok: impl Fn() -> bool) {
    eventually(what, Duration::from_secs(5), || std::future::ready(ok())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_slower_than_the_budget_gets_504_in_time_and_sees_the_cancellation() {
    let budget = Duration::from_millis(200);
    let (addr, inventory) = start(GatewayConfig {
        budget_ms: 200,
        ..GatewayConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    // Warm the HTTP connection so the measurement is the budget, not the TCP handshake.
    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let sent = Instant::now();
    let response = http
        .get(format!("http://{addr}/api/v1/sales/1"))
        .send()
        .await
        .unwrap();
    let took = sent.elapsed();
    assert_eq!(response.status(), 504);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "timeout", "{body}");
    // At the deadline, not when the downstream finishes (5 s): the slack is for a loaded
    // machine's scheduling, far below the downstream's sleep.
    assert!(
        took >= budget && took <= budget + Duration::from_millis(500),
        "504 after {took:?} with a {budget:?} budget"
    );

    // The downstream got the budget as its deadline and was cancelled, not left running.
    poll_until("the downstream sees the cancellation", || {
        inventory.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(inventory.started.load(Ordering::SeqCst), 1);
    assert_eq!(inventory.finished.load(Ordering::SeqCst), 0);
    let timeouts = inventory.timeouts.lock().clone();
    assert_eq!(timeouts.len(), 1);
    assert!(
        timeouts[0] <= budget && timeouts[0] >= budget / 2,
        "grpc-timeout {:?}",
        timeouts[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_gateway_sheds_at_once_with_503_and_retry_after() {
    let (addr, inventory) = start(GatewayConfig {
        budget_ms: 3_000,
        max_in_flight: 2,
        ..GatewayConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/api/v1/sales/1");
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move { http.get(url).send().await.unwrap().status() })
        })
        .collect();
    poll_until("two requests in flight", || {
        inventory.started.load(Ordering::SeqCst) == 2
    })
    .await;

    let sent = Instant::now();
    let shed = http.get(&url).send().await.unwrap();
    let took = sent.elapsed();
    assert_eq!(shed.status(), 503);
    assert_eq!(
        shed.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = shed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert!(took < Duration::from_secs(1), "shedding took {took:?}");
    // The shed request never reached the downstream.
    assert_eq!(inventory.started.load(Ordering::SeqCst), 2);
    for request in busy {
        assert_eq!(request.await.unwrap(), 504);
    }
    // Room again once they are done.
    let again = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}
