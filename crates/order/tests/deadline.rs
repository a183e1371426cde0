//! The order service passes what is left of its caller's deadline, minus a reserve, to its own
//! call to inventory (`Release` on cancel), and sends nothing when that leaves no time: the
//! order is still cancelled, and its release is left to the sweeper. The inventory here is a
//! real gRPC server that records the `grpc-timeout` each `Release` arrived with.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use flashsale_order::testing::order_request;
use flashsale_order::{
    model::OrderRequest,
    queue::JournalQueue,
    store::{OrderStore, SqlOrderStore},
    OrderService,
};
use flashsale_proto::{
    inventory::{
        self as pb,
        inventory_client::InventoryClient,
        inventory_server::{Inventory, InventoryServer},
    },
    order::{orders_server::Orders, TransitionOutcome, TransitionRequest},
};
use flashsale_registry::{deadline::parse_grpc_timeout, Balanced};
use flashsale_storage::{testing::run, Engine};
use tokio::net::TcpListener;
use tonic::{
    transport::{server::TcpIncoming, Server},
    Request, Response, Status,
};

/// Each release: the order id and the deadline it came with.
type Releases = Arc<Mutex<Vec<(String, Option<Duration>)>>>;

/// An inventory that only releases, recording each release's deadline.
#[derive(Clone, Default)]
struct RecordingInventory {
    releases: Releases,
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("test"))
}

#[tonic::async_trait]
impl Inventory for RecordingInventory {
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
        unimplemented()
    }
    async fn get_sale(
        &self,
        _: Request<pb::GetSaleRequest>,
    ) -> Result<Response<pb::GetSaleReply>, Status> {
        unimplemented()
    }
    async fn list_sales(
        &self,
        _: Request<pb::ListSalesRequest>,
    ) -> Result<Response<pb::ListSalesReply>, Status> {
        unimplemented()
    }
    async fn reserve(
        &self,
        _: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveReply>, Status> {
        unimplemented()
    }
    async fn reserve_many(
        &self,
        _: Request<pb::ReserveManyRequest>,
    ) -> Result<Response<pb::ReserveManyReply>, Status> {
        unimplemented()
    }
    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseReply>, Status> {
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        self.releases
            .lock()
            .unwrap()
            .push((request.into_inner().order_id, timeout));
        Ok(Response::new(pb::ReleaseReply::default()))
    }
    async fn reconcile(
        &self,
        _: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::ReconcileReply>, Status> {
        unimplemented()
    }
}

fn order(n: u128) -> OrderRequest {
    order_request(7, n)
}

fn cancel_with(order: &OrderRequest, grpc_timeout: &str) -> Request<TransitionRequest> {
    let mut request = Request::new(TransitionRequest {
        order_id: order.order_id.clone(),
        user_id: order.user_id,
    });
    request
        .metadata_mut()
        .insert("grpc-timeout", grpc_timeout.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_gives_the_release_its_remaining_budget_minus_a_reserve_or_sends_nothing() {
    run(Engine::Sqlite, &[flashsale_order::schema], |t| async move {
        let inventory = RecordingInventory::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = InventoryServer::new(inventory.clone());
        tokio::spawn(async move {
            Server::builder()
                .add_service(server)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
        });
        let releaser = InventoryClient::new(Balanced::direct(&addr).unwrap());
        let store = Arc::new(SqlOrderStore::new(t.db.clone()));
        let (roomy, hurried) = (order(1), order(2));
        store
            .insert_batch(&[roomy.clone(), hurried.clone()], 600_000)
            .await
            .unwrap();
        let queue = JournalQueue::open(t.db.clone(), 64, 60_000).await.unwrap();
        let service = OrderService::new(queue, store.clone(), Arc::new(releaser));

        // 1.9 s left (under the release's own 2 s cap, so the cap does not decide): the
        // release gets the rest minus the 20 ms reserve. At least 1 s of it is left however
        // long finding and moving the order takes on a loaded machine (up to 880 ms).
        let reply = service.cancel(cancel_with(&roomy, "1900m")).await.unwrap();
        assert_eq!(reply.into_inner().outcome(), TransitionOutcome::Done);
        let releases = inventory.releases.lock().unwrap().clone();
        assert_eq!(releases.len(), 1);
        assert_eq!(releases[0].0, roomy.order_id);
        let budget = releases[0].1.expect("the release carried a deadline");
        assert!(
            budget <= Duration::from_millis(1_880) && budget >= Duration::from_secs(1),
            "release budget {budget:?}"
        );

        // 10 ms left, less than the reserve: cancelled, but no release is sent; the order
        // stays unreleased for the sweeper.
        let reply = service.cancel(cancel_with(&hurried, "10m")).await.unwrap();
        assert_eq!(reply.into_inner().outcome(), TransitionOutcome::Done);
        assert_eq!(inventory.releases.lock().unwrap().len(), 1, "nothing sent");
        let unreleased: Vec<String> = store
            .unreleased(10)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(unreleased, vec![hurried.order_id.clone()]);
    })
    .await;
}
