//! The sale pages answered from the gateway's memory, against a real gRPC inventory that pushes
//! its sales feed and counts every per-request call it still gets.
//!
//! The gateway runs for real (router, middleware, gRPC clients, the feed follower) in front of
//! an inventory whose `WatchSales` stream the test drives by hand: a snapshot, then changes, then
//! the end of the stream. Reads while the feed is live must not reach the inventory; the live
//! stream (`/events`) must carry each change; with the feed gone, reads must ask the inventory
//! again. Ports are ephemeral.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use flashsale_gateway::GatewayConfig;
use flashsale_proto::inventory::{self as pb, inventory_server::Inventory};
use flashsale_testkit::eventually;
use futures::channel::mpsc;
use parking_lot::Mutex;
use serde_json::Value;
use tonic::{Request, Response, Status};

mod support;

type Feed = mpsc::UnboundedSender<Result<pb::SalesUpdate, Status>>;

/// An inventory whose sales feed the test drives, counting the calls a read could make.
#[derive(Clone, Default)]
struct FeedInventory {
    sales: Arc<Mutex<BTreeMap<i64, pb::Sale>>>,
    /// The open `WatchSales` stream, if any.
    feed: Arc<Mutex<Option<Feed>>>,
    /// Whether a new `WatchSales` is refused (the feed is "down").
    refuse_watch: Arc<std::sync::atomic::AtomicBool>,
    watches: Arc<AtomicUsize>,
    gets: Arc<AtomicUsize>,
    lists: Arc<AtomicUsize>,
}

fn sale(id: i64, remaining: i64) -> pb::Sale {
    pb::Sale {
        id,
        name: format!("sale {id}"),
        price_cents: 100,
        stock: 10,
        remaining,
        per_user_limit: 1,
        starts_at_ms: 0,
        ends_at_ms: i64::MAX / 2,
    }
}

impl FeedInventory {
    /// Changes a sale and pushes the change on the open feed.
    fn push(&self, sale: pb::Sale) {
        self.sales.lock().insert(sale.id, sale.clone());
        if let Some(feed) = self.feed.lock().as_ref() {
            feed.unbounded_send(Ok(pb::SalesUpdate {
                snapshot: false,
                sales: vec![sale],
            }))
            .unwrap();
        }
    }
}

#[tonic::async_trait]
impl Inventory for FeedInventory {
    type WatchStockStream = futures::stream::Empty<Result<pb::StockEvent, Status>>;
    type WatchSalesStream = mpsc::UnboundedReceiver<Result<pb::SalesUpdate, Status>>;

    async fn watch_sales(
        &self,
        _: Request<pb::WatchSalesRequest>,
    ) -> Result<Response<Self::WatchSalesStream>, Status> {
        if self.refuse_watch.load(Ordering::SeqCst) {
            return Err(Status::unavailable("feed down (test)"));
        }
        let (tx, rx) = mpsc::unbounded();
        tx.unbounded_send(Ok(pb::SalesUpdate {
            snapshot: true,
            sales: self.sales.lock().values().cloned().collect(),
        }))
        .unwrap();
        *self.feed.lock() = Some(tx);
        self.watches.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(rx))
    }

    async fn watch_stock(
        &self,
        _: Request<pb::WatchStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        Ok(Response::new(futures::stream::empty()))
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
        self.gets.fetch_add(1, Ordering::SeqCst);
        let sale = self.sales.lock().get(&request.into_inner().id).cloned();
        Ok(Response::new(pb::GetSaleReply { sale }))
    }

    async fn list_sales(
        &self,
        _: Request<pb::ListSalesRequest>,
    ) -> Result<Response<pb::ListSalesReply>, Status> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let sales = self.sales.lock().values().cloned().collect();
        Ok(Response::new(pb::ListSalesReply { sales }))
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

/// The inventory and a gateway following it; returns the gateway's address.
async fn start(inventory: FeedInventory) -> SocketAddr {
    let grpc = support::serve_inventory(inventory).await;
    support::serve_gateway(GatewayConfig::default(), &grpc).await
}

async fn get(client: &reqwest::Client, addr: SocketAddr, path: &str) -> (u16, Value) {
    let r = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Reads the live stream until an event shows `remaining` (each read waits for the next chunk,
/// 5 s at most).
async fn next_event_showing(stream: &mut reqwest::Response, seen: &mut String, remaining: i64) {
    let wanted = format!("\"remaining\":{remaining},");
    let shown = |seen: &str| {
        seen.split("\n\n")
            .any(|event| event.contains("event: sale") && event.contains(&wanted))
    };
    while !shown(seen) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_come_from_the_pushed_pages_and_fall_back_to_the_inventory_without_the_feed() {
    let inventory = FeedInventory::default();
    inventory.sales.lock().insert(1, sale(1, 10));
    let addr = start(inventory.clone()).await;
    let client = reqwest::Client::new();

    // Live once the snapshot is in; from then on no read reaches the inventory.
    eventually(
        "the gateway follows the feed",
        Duration::from_secs(5),
        || {
            let watching = inventory.watches.load(Ordering::SeqCst) > 0;
            async move { watching }
        },
    )
    .await;
    eventually("the snapshot served", Duration::from_secs(5), || async {
        let (gets, lists) = (
            inventory.gets.load(Ordering::SeqCst),
            inventory.lists.load(Ordering::SeqCst),
        );
        let (status, sale) = get(&client, addr, "/api/v1/sales/1").await;
        status == 200
            && sale["remaining"] == 10
            && inventory.gets.load(Ordering::SeqCst) == gets
            && inventory.lists.load(Ordering::SeqCst) == lists
    })
    .await;
    let (gets, lists) = (
        inventory.gets.load(Ordering::SeqCst),
        inventory.lists.load(Ordering::SeqCst),
    );
    for _ in 0..20 {
        assert_eq!(get(&client, addr, "/api/v1/sales/1").await.0, 200);
        let (status, list) = get(&client, addr, "/api/v1/sales").await;
        assert_eq!((status, list.as_array().unwrap().len()), (200, 1));
        let (status, error) = get(&client, addr, "/api/v1/sales/999").await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (404, Some("not_found"))
        );
    }
    assert_eq!(
        inventory.gets.load(Ordering::SeqCst),
        gets,
        "no GetSale while live"
    );
    assert_eq!(
        inventory.lists.load(Ordering::SeqCst),
        lists,
        "no ListSales while live"
    );

    // A pushed change shows on the page, the list, and the live stream.
    let mut stream = client
        .get(format!("http://{addr}/api/v1/sales/1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    next_event_showing(&mut stream, &mut seen, 10).await;
    inventory.push(sale(1, 7));
    next_event_showing(&mut stream, &mut seen, 7).await;
    eventually(
        "the page shows the push",
        Duration::from_secs(5),
        || async {
            get(&client, addr, "/api/v1/sales/1").await.1["remaining"] == 7
                && get(&client, addr, "/api/v1/sales").await.1[0]["remaining"] == 7
        },
    )
    .await;
    inventory.push(sale(2, 3));
    eventually("a new sale appears", Duration::from_secs(5), || async {
        get(&client, addr, "/api/v1/sales/2").await.0 == 200
    })
    .await;
    let (status, _) = get(&client, addr, "/api/v1/sales/999/events").await;
    assert_eq!(status, 404);

    // The feed ends and cannot be watched again: reads ask the inventory.
    inventory.refuse_watch.store(true, Ordering::SeqCst);
    inventory.feed.lock().take();
    inventory.sales.lock().insert(1, sale(1, 5));
    eventually(
        "reads fall back to the inventory",
        Duration::from_secs(5),
        || async { get(&client, addr, "/api/v1/sales/1").await.1["remaining"] == 5 },
    )
    .await;
    assert!(inventory.gets.load(Ordering::SeqCst) > gets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_ends_the_live_streams_instead_of_waiting_for_them() {
    let inventory = FeedInventory::default();
    inventory.sales.lock().insert(1, sale(1, 10));
    let grpc = support::serve_inventory(inventory.clone()).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, serving) = support::serve_gateway_until(GatewayConfig::default(), &grpc, async {
        let _ = stopped.await;
    })
    .await;
    let client = reqwest::Client::new();
    eventually("the snapshot served", Duration::from_secs(5), || async {
        get(&client, addr, "/api/v1/sales/1").await.0 == 200
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = client
            .get(format!("http://{addr}/api/v1/sales/1/events"))
            .send()
            .await
            .unwrap();
        let mut seen = String::new();
        next_event_showing(&mut stream, &mut seen, 10).await;
        streams.push(stream);
    }

    stop.send(()).unwrap();
    // Well within the host's grace period (10 s): the drain does not wait for the streams.
    tokio::time::timeout(Duration::from_secs(3), serving)
        .await
        .expect("the gateway drained without waiting for its live streams")
        .unwrap()
        .unwrap();
    for mut stream in streams {
        let rest = tokio::time::timeout(Duration::from_secs(3), stream.chunk())
            .await
            .expect("the stream ended");
        assert!(matches!(rest, Ok(None) | Err(_)), "{rest:?}");
    }
}
