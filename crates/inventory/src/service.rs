//! The inventory gRPC service.
//!
//! Sales are kept in memory after start (they are few and read on every request); the stock
//! decisions go to the [`StockStore`]. Creating a sale writes the database first, then starts
//! tracking its stock, so a sale is never sold that the database does not know. A reserve for a
//! sale id this service does not know is answered "no such sale" at once: it never reaches the
//! stock backend or the database (with a shared backend, [`InventoryService::spawn_catalog_refresh`]
//! keeps the list current with sales created by other instances). If the backend lost a known
//! sale, the sale is paused and rebuilt ([`crate::recovery`]). A backend that cannot be reached
//! is `UNAVAILABLE` (the gateway answers `503`; a retry with the same order id is safe).
//! `Reconcile` compares the backend with the database and repairs drift ([`crate::drift`]),
//! with the reservation grace period the rebuilds wait.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use flashsale_proto::inventory::{
    self as pb,
    inventory_server::{Inventory, InventoryServer},
};
use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    catalog::{Catalog, CatalogError},
    config::InventoryConfig,
    drift::SaleDrift,
    reconcile::ReconcileError,
    recovery::Recovery,
    sale::{NewSale, Sale},
    sales_feed::SalesFeed,
    stock::{ReserveDecision, ReserveOutcome, ReserveRequest, StockError, StockStore},
};

/// Errors opening the service.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The catalog could not be read.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The stock backend could not be loaded.
    #[error(transparent)]
    Stock(StockError),
}

/// The inventory service over a catalog and a stock store.
#[derive(Clone)]
pub struct InventoryService {
    catalog: Arc<dyn Catalog>,
    stock: Arc<dyn StockStore>,
    sales: Arc<RwLock<BTreeMap<i64, Sale>>>,
    recovery: Recovery,
    /// Every sale with its remaining stock, pushed to `WatchSales` watchers.
    feed: SalesFeed,
    /// Ends the `WatchStock` streams (when the server stops: open streams would hold its
    /// drain open).
    streams_stop: CancellationToken,
}

impl std::fmt::Debug for InventoryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventoryService").finish_non_exhaustive()
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "inventory service failure");
    Status::internal("internal error")
}

fn backend_unavailable(e: &StockError) -> Status {
    tracing::error!(error = %e, "stock backend unavailable");
    Status::unavailable("stock backend unavailable; retry")
}

/// How long a lost sale waits before it is rebuilt unless configured (the default grace).
const DEFAULT_REBUILD_DELAY: Duration = Duration::from_secs(30);

fn parse_order_id(id: &str) -> Result<u128, Status> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.as_u128())
        .map_err(|_| Status::invalid_argument("order_id must be a UUID"))
}

impl InventoryService {
    /// Loads every sale and rebuilds its stock from the reservations the database holds, at
    /// once. Right when nothing else can have reserved meanwhile: `flashsale dev`, where the
    /// gateway stopped and starts with the inventory.
    pub async fn open(
        catalog: Arc<dyn Catalog>,
        stock: Arc<dyn StockStore>,
    ) -> Result<Self, OpenError> {
        Self::open_with(catalog, stock, None).await
    }

    /// Like [`InventoryService::open`], but a sale the stock backend does not already track
    /// is paused and rebuilt after `rebuild_delay` (the reservation grace period), like a sale
    /// the backend lost ([`crate::recovery`]). For an inventory process restarting while
    /// gateways keep running: reservations the previous process made whose orders are still on
    /// their way to the journal are then counted before anything is sold again.
    pub async fn open_paused(
        catalog: Arc<dyn Catalog>,
        stock: Arc<dyn StockStore>,
        rebuild_delay: Duration,
    ) -> Result<Self, OpenError> {
        Self::open_with(catalog, stock, Some(rebuild_delay)).await
    }

    async fn open_with(
        catalog: Arc<dyn Catalog>,
        stock: Arc<dyn StockStore>,
        rebuild_delay: Option<Duration>,
    ) -> Result<Self, OpenError> {
        let sales = catalog.list().await?;
        let recovery = Recovery::new(
            Arc::clone(&catalog),
            Arc::clone(&stock),
            rebuild_delay.unwrap_or(DEFAULT_REBUILD_DELAY),
        );
        if rebuild_delay.is_some() {
            let mut paused = 0;
            for sale in &sales {
                if stock
                    .remaining(sale.id)
                    .await
                    .map_err(OpenError::Stock)?
                    .is_none()
                {
                    recovery.start(sale.clone());
                    paused += 1;
                }
            }
            tracing::info!(
                sales = sales.len(),
                paused,
                "sales opened; untracked ones paused"
            );
        } else {
            let reservations = catalog.load_reservations().await?;
            for sale in &sales {
                stock
                    .load(sale, &reservations)
                    .await
                    .map_err(OpenError::Stock)?;
            }
            tracing::info!(
                sales = sales.len(),
                reservations = reservations.len(),
                "stock rebuilt from the database"
            );
        }
        let sales = Arc::new(RwLock::new(sales.into_iter().map(|s| (s.id, s)).collect()));
        Ok(Self {
            recovery,
            catalog,
            feed: SalesFeed::new(Arc::clone(&sales), Arc::clone(&stock)),
            stock,
            sales,
            streams_stop: CancellationToken::new(),
        })
    }

    /// Ends every `WatchStock` stream when `stop` is cancelled (the server's stop).
    #[must_use]
    pub fn with_streams_stop(mut self, stop: CancellationToken) -> Self {
        self.streams_stop = stop;
        self
    }

    /// Sets how long a sale the stock backend lost stays paused before it is rebuilt from the
    /// database; it must be at least the reservation grace period (see [`crate::recovery`]).
    #[must_use]
    pub fn with_rebuild_delay(mut self, delay: Duration) -> Self {
        self.recovery = Recovery::new(Arc::clone(&self.catalog), Arc::clone(&self.stock), delay);
        self
    }

    /// Learns sales created by other instances every `interval` (shared stock backends only:
    /// with in-process stock every instance would sell the same stock).
    pub fn spawn_catalog_refresh(
        &self,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(crate::recovery::refresh_catalog(
            Arc::clone(&self.catalog),
            Arc::clone(&self.sales),
            interval,
            shutdown,
        ))
    }

    /// Starts the reconciler (see [`crate::reconcile`]) until `shutdown` is cancelled.
    pub fn spawn_reconciler(
        &self,
        config: &InventoryConfig,
        clock: flashsale_kernel::SharedClock,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(crate::reconcile::run(
            Arc::clone(&self.catalog),
            Arc::clone(&self.stock),
            Duration::from_millis(config.reservation_grace_ms),
            Duration::from_millis(config.reconcile_interval_ms.max(10)),
            clock,
            shutdown,
        ))
    }

    /// The gRPC server for this service.
    pub fn into_server(self) -> InventoryServer<Self> {
        InventoryServer::new(self)
    }

    /// A sale with its live remaining stock.
    async fn to_pb(&self, sale: Sale) -> Result<pb::Sale, Status> {
        let remaining = self
            .stock
            .remaining(sale.id)
            .await
            .map_err(internal)?
            .unwrap_or(0);
        Ok(sale.to_pb(remaining))
    }
}

/// Most items one `ReserveMany` call may carry.
pub const MAX_BATCH_ITEMS: usize = 1024;

/// The answer for a sale id this service does not know.
fn sale_not_found() -> pb::ReserveReply {
    pb::ReserveReply {
        outcome: pb::ReserveOutcome::SaleNotFound.into(),
        remaining: 0,
        price_cents: 0,
    }
}

impl InventoryService {
    /// Checks a reserve before the backend sees it: `None` for an unknown sale (answered here:
    /// no backend call, no database query), else the backend's request and the sale's price.
    fn check_reserve(
        &self,
        r: &pb::ReserveRequest,
    ) -> Result<Option<(ReserveRequest, i64)>, Status> {
        if r.quantity < 1 {
            return Err(Status::invalid_argument("quantity must be at least 1"));
        }
        let order = parse_order_id(&r.order_id)?;
        let Some(price_cents) = self.sales.read().get(&r.sale_id).map(|s| s.price_cents) else {
            return Ok(None);
        };
        if self.recovery.is_rebuilding(r.sale_id) {
            return Err(Status::unavailable(
                "this sale's stock is being rebuilt; retry shortly",
            ));
        }
        let request = ReserveRequest {
            order,
            sale_id: r.sale_id,
            user_id: r.user_id,
            quantity: r.quantity,
            now_ms: flashsale_storage::now_ms(),
        };
        Ok(Some((request, price_cents)))
    }

    /// The answer to a backend's decision (a sale the backend lost starts its rebuild).
    fn answer_reserve(
        &self,
        sale_id: i64,
        price_cents: i64,
        decision: ReserveDecision,
    ) -> Result<pb::ReserveReply, Status> {
        if matches!(
            decision.outcome,
            ReserveOutcome::Reserved | ReserveOutcome::SoldOut | ReserveOutcome::LimitReached
        ) {
            // A known sale (the id was checked before), so the label set stays bounded.
            metrics::gauge!(flashsale_telemetry::metrics::STOCK_REMAINING, "sale" => sale_id.to_string())
                .set(decision.remaining as f64);
        }
        if decision.outcome == ReserveOutcome::NotFound {
            // A sale we know that the backend does not: its state was lost.
            if let Some(sale) = self.sales.read().get(&sale_id).cloned() {
                self.recovery.start(sale);
            }
            return Err(Status::unavailable(
                "this sale's stock is being rebuilt; retry shortly",
            ));
        }
        let outcome = match decision.outcome {
            ReserveOutcome::Reserved => pb::ReserveOutcome::Reserved,
            ReserveOutcome::AlreadyReserved => pb::ReserveOutcome::AlreadyReserved,
            ReserveOutcome::SoldOut => pb::ReserveOutcome::SoldOut,
            ReserveOutcome::LimitReached => pb::ReserveOutcome::LimitReached,
            ReserveOutcome::NotFound => pb::ReserveOutcome::SaleNotFound,
            ReserveOutcome::NotStarted => pb::ReserveOutcome::NotStarted,
            ReserveOutcome::Ended => pb::ReserveOutcome::Ended,
            ReserveOutcome::Conflict => pb::ReserveOutcome::OrderIdConflict,
        };
        Ok(pb::ReserveReply {
            outcome: outcome.into(),
            remaining: decision.remaining,
            price_cents,
        })
    }
}

/// The `WatchSales` stream.
type SalesUpdateStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SalesUpdate, Status>> + Send>>;

/// The `WatchStock` stream.
type StockEventStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::StockEvent, Status>> + Send>>;

fn to_pb_event(event: crate::stock::StockEvent) -> pb::StockEvent {
    use crate::stock::StockEvent;
    let kind = match event {
        StockEvent::SoldOut(_) => pb::StockEventKind::SoldOut,
        StockEvent::Restocked(_) => pb::StockEventKind::Restocked,
    };
    pb::StockEvent {
        sale_id: event.sale_id(),
        kind: kind.into(),
    }
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    type WatchStockStream = StockEventStream;

    async fn watch_stock(
        &self,
        _request: Request<pb::WatchStockRequest>,
    ) -> Result<Response<Self::WatchStockStream>, Status> {
        use futures::StreamExt;
        let events = self
            .stock
            .watch()
            .await
            .map_err(|e| backend_unavailable(&e))?;
        let stop = self.streams_stop.clone().cancelled_owned();
        let stream = events
            .map(|event| Ok(to_pb_event(event)))
            .take_until(stop)
            .boxed();
        Ok(Response::new(stream))
    }

    type WatchSalesStream = SalesUpdateStream;

    async fn watch_sales(
        &self,
        _request: Request<pb::WatchSalesRequest>,
    ) -> Result<Response<Self::WatchSalesStream>, Status> {
        use futures::StreamExt;
        let updates = self
            .feed
            .watch(self.streams_stop.clone())
            .await
            .map_err(|e| backend_unavailable(&e))?;
        Ok(Response::new(updates.map(Ok).boxed()))
    }

    async fn create_sale(
        &self,
        request: Request<pb::CreateSaleRequest>,
    ) -> Result<Response<pb::Sale>, Status> {
        let r = request.into_inner();
        let new = NewSale {
            name: r.name,
            price_cents: r.price_cents,
            stock: r.stock,
            per_user_limit: r.per_user_limit,
            starts_at_ms: r.starts_at_ms,
            ends_at_ms: r.ends_at_ms,
        };
        new.validate().map_err(Status::invalid_argument)?;
        let sale = self.catalog.create(&new).await.map_err(internal)?;
        // Known (with its price) before its stock can be reserved.
        self.sales.write().insert(sale.id, sale.clone());
        self.stock.load(&sale, &[]).await.map_err(internal)?;
        tracing::info!(sale_id = sale.id, stock = sale.stock, "sale created");
        Ok(Response::new(self.to_pb(sale).await?))
    }

    async fn get_sale(
        &self,
        request: Request<pb::GetSaleRequest>,
    ) -> Result<Response<pb::GetSaleReply>, Status> {
        let id = request.into_inner().id;
        let sale = self.sales.read().get(&id).cloned();
        let sale = match sale {
            Some(sale) => Some(self.to_pb(sale).await?),
            None => None,
        };
        Ok(Response::new(pb::GetSaleReply { sale }))
    }

    async fn list_sales(
        &self,
        _request: Request<pb::ListSalesRequest>,
    ) -> Result<Response<pb::ListSalesReply>, Status> {
        let all: Vec<Sale> = self.sales.read().values().cloned().collect();
        let mut sales = Vec::with_capacity(all.len());
        for sale in all {
            sales.push(self.to_pb(sale).await?);
        }
        Ok(Response::new(pb::ListSalesReply { sales }))
    }

    async fn reserve(
        &self,
        request: Request<pb::ReserveRequest>,
    ) -> Result<Response<pb::ReserveReply>, Status> {
        let Some((request, price_cents)) = self.check_reserve(&request.into_inner())? else {
            return Ok(Response::new(sale_not_found()));
        };
        let started = std::time::Instant::now();
        let decision = self
            .stock
            .reserve(request)
            .await
            .map_err(|e| backend_unavailable(&e))?;
        metrics::histogram!(flashsale_telemetry::metrics::STOCK_CALL_LATENCY, "op" => "reserve")
            .record(started.elapsed().as_secs_f64());
        self.answer_reserve(request.sale_id, price_cents, decision)
            .map(Response::new)
    }

    async fn reserve_many(
        &self,
        request: Request<pb::ReserveManyRequest>,
    ) -> Result<Response<pb::ReserveManyReply>, Status> {
        let items = request.into_inner().items;
        if items.len() > MAX_BATCH_ITEMS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH_ITEMS} items per call"
            )));
        }
        flashsale_telemetry::span::link_current(items.iter().map(|i| i.traceparent.as_str()));
        // Items answered without the backend (bad, unknown sale, rebuilding) are answered in
        // place; the others go to the backend together, in their order.
        let mut results: Vec<Option<Result<pb::ReserveReply, Status>>> =
            Vec::with_capacity(items.len());
        let mut requests = Vec::with_capacity(items.len());
        let mut sent = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let checked = item
                .request
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("request is required"))
                .and_then(|r| self.check_reserve(r));
            results.push(match checked {
                Ok(Some((request, price_cents))) => {
                    requests.push(request);
                    sent.push((index, price_cents));
                    None
                }
                Ok(None) => Some(Ok(sale_not_found())),
                Err(status) => Some(Err(status)),
            });
        }
        if !requests.is_empty() {
            let started = std::time::Instant::now();
            let decided = self
                .stock
                .reserve_many(&requests)
                .await
                .and_then(|decisions| {
                    (decisions.len() == requests.len())
                        .then_some(decisions)
                        .ok_or_else(|| StockError("backend answered a different count".into()))
                });
            metrics::histogram!(flashsale_telemetry::metrics::STOCK_CALL_LATENCY, "op" => "reserve_many")
                .record(started.elapsed().as_secs_f64());
            match decided {
                Ok(decisions) => {
                    for ((request, (index, price_cents)), decision) in
                        requests.iter().zip(&sent).zip(decisions)
                    {
                        results[*index] =
                            Some(self.answer_reserve(request.sale_id, *price_cents, decision));
                    }
                }
                Err(e) => {
                    let status = backend_unavailable(&e);
                    for (index, _) in &sent {
                        results[*index] = Some(Err(status.clone()));
                    }
                }
            }
        }
        let results = results
            .into_iter()
            .map(|result| pb::ReserveResult {
                result: Some(match result {
                    Some(Ok(reply)) => pb::reserve_result::Result::Reply(reply),
                    Some(Err(status)) => pb::reserve_result::Result::Error(pb::ItemError {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    }),
                    None => pb::reserve_result::Result::Error(pb::ItemError {
                        code: tonic::Code::Internal as i32,
                        message: "internal error".to_owned(),
                    }),
                }),
            })
            .collect();
        Ok(Response::new(pb::ReserveManyReply { results }))
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseReply>, Status> {
        let order = parse_order_id(&request.into_inner().order_id)?;
        let released = self
            .stock
            .release(order)
            .await
            .map_err(|e| backend_unavailable(&e))?;
        Ok(Response::new(pb::ReleaseReply { released }))
    }

    async fn reconcile(
        &self,
        request: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::ReconcileReply>, Status> {
        let r = request.into_inner();
        let sales: Vec<Sale> = {
            let known = self.sales.read();
            match r.sale_id {
                Some(id) => vec![known
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| Status::not_found(format!("no sale {id}")))?],
                None => known.values().cloned().collect(),
            }
        };
        // A sale waiting for its rebuild is left to it (reported untracked).
        let (paused, sales): (Vec<Sale>, Vec<Sale>) = sales
            .into_iter()
            .partition(|s| self.recovery.is_rebuilding(s.id));
        let mut reports = crate::drift::reconcile(
            &*self.catalog,
            &*self.stock,
            &sales,
            self.recovery.delay(),
            r.dry_run,
        )
        .await
        .map_err(|e| match e {
            ReconcileError::Stock(e) => backend_unavailable(&e),
            ReconcileError::Catalog(e) => internal(e),
        })?;
        reports.extend(paused.iter().map(|s| SaleDrift {
            sale_id: s.id,
            ..SaleDrift::default()
        }));
        reports.sort_unstable_by_key(|d| d.sale_id);
        Ok(Response::new(pb::ReconcileReply {
            sales: reports.iter().map(drift_to_pb).collect(),
            dry_run: r.dry_run,
        }))
    }
}

fn drift_to_pb(d: &SaleDrift) -> pb::SaleReconcile {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    pb::SaleReconcile {
        sale_id: d.sale_id,
        tracked: d.tracked,
        remaining_before: d.remaining_before,
        remaining_after: d.remaining_after,
        holds_adopted: count(d.adopted),
        holds_released: count(d.released),
        holds_voided: count(d.voided),
        users_fixed: d
            .users_fixed
            .iter()
            .map(|f| pb::HeldFix {
                user_id: f.user_id,
                before: f.before,
                after: f.after,
            })
            .collect(),
        holds_in_flight: count(d.in_flight),
        conflicts: count(d.conflicts),
        drifted: d.drifted(),
    }
}
