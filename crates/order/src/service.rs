//! The order gRPC service: submit, read, pay, cancel.
//!
//! Every transition reads the order, checks the state machine, and writes with the version it
//! read; if another writer got there first (a payment racing the expiry sweeper or a cancel),
//! it reads again and decides on the fresh state. Payment also refuses an order whose payment
//! time is over even if the sweeper has not run yet, expiring it on the spot: a late payment can
//! never succeed for stock that is about to be released.

use std::sync::Arc;

use flashsale_proto::order::{
    self as pb,
    orders_server::{Orders, OrdersServer},
};
use flashsale_telemetry::TraceContext;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use flashsale_registry::deadline::{incoming_deadline, pass_on};
use tokio::time::Instant;

use crate::{
    expiry::release_stock_within,
    model::{Order, OrderRequest, OrderStatus},
    queue::{OrderQueue, QueueError},
    release::{StockReleaser, RELEASE_TIMEOUT},
    store::OrderStore,
};

/// Time kept from the caller's budget for answering after the release to inventory returns.
const RELEASE_RESERVE: std::time::Duration = std::time::Duration::from_millis(20);

/// The order service over its queue, store and stock releaser.
#[derive(Clone)]
pub struct OrderService {
    queue: Arc<dyn OrderQueue>,
    store: Arc<dyn OrderStore>,
    releaser: Arc<dyn StockReleaser>,
}

impl std::fmt::Debug for OrderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderService").finish_non_exhaustive()
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "order service failure");
    Status::internal("internal error")
}

/// Converts an order to its wire form.
pub fn order_to_pb(o: &Order) -> pb::Order {
    let status = match o.status {
        OrderStatus::Pending => pb::OrderStatus::Pending,
        OrderStatus::Created => pb::OrderStatus::Created,
        OrderStatus::Paid => pb::OrderStatus::Paid,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
        OrderStatus::Expired => pb::OrderStatus::Expired,
    };
    pb::Order {
        id: o.id.clone(),
        user_id: o.user_id,
        sale_id: o.sale_id,
        quantity: o.quantity,
        price_cents: o.price_cents,
        status: status.into(),
        created_at_ms: o.created_at_ms,
        updated_at_ms: o.updated_at_ms,
        expires_at_ms: o.expires_at_ms,
        version: o.version,
    }
}

/// How far in the future an order request's acceptance time may be (clocks of other machines).
const MAX_CLOCK_SKEW_MS: i64 = 5_000;

/// Longest order id the schema stores (`VARCHAR(64)` on MySQL; the gateway sends 36-byte
/// lowercase UUIDs).
pub const MAX_ORDER_ID_BYTES: usize = 64;

/// Longest idempotency key the schema stores (`VARCHAR(255)` on MySQL; the gateway allows 128).
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;

/// Most orders `ListOrders` returns.
const LIST_LIMIT: i64 = 1000;

/// Most attempts at a transition that keeps losing optimistic-locking races.
const TRANSITION_ATTEMPTS: usize = 8;

impl OrderService {
    /// A service over the given parts.
    pub fn new(
        queue: Arc<dyn OrderQueue>,
        store: Arc<dyn OrderStore>,
        releaser: Arc<dyn StockReleaser>,
    ) -> Self {
        Self {
            queue,
            store,
            releaser,
        }
    }

    /// The gRPC server for this service.
    pub fn into_server(self) -> OrdersServer<Self> {
        OrdersServer::new(self)
    }

    /// The user's order, persisted or still queued.
    ///
    /// The queue is read first: the consumer writes an order before it removes the request from
    /// the queue, so a request missing from the queue is already in the table. (Reading the
    /// table first could miss both while the consumer moves it.)
    async fn find(&self, order_id: &str, user_id: i64) -> Result<Option<Order>, Status> {
        if let Some(queued) = self.queue.find(user_id, order_id).await.map_err(internal)? {
            if let Some(order) = self.store.get(order_id).await.map_err(internal)? {
                return Ok(Some(order).filter(|o| o.user_id == user_id));
            }
            return Ok(Some(Order::pending(&queued)).filter(|o| o.user_id == user_id));
        }
        let order = self.store.get(order_id).await.map_err(internal)?;
        Ok(order.filter(|o| o.user_id == user_id))
    }

    /// Moves the user's order to `to`, retrying lost races on fresh data. `deadline`: when
    /// the caller stops waiting (bounds the release call to inventory).
    async fn transition(
        &self,
        order_id: &str,
        user_id: i64,
        to: OrderStatus,
        deadline: Option<Instant>,
    ) -> Result<pb::TransitionReply, Status> {
        for _ in 0..TRANSITION_ATTEMPTS {
            let Some(order) = self.find(order_id, user_id).await? else {
                return Ok(reply(pb::TransitionOutcome::NotFound, None));
            };
            let now = flashsale_storage::now_ms();
            // Past its payment time, an unpaid order is expired whatever the sweeper has done.
            let to_now = if order.status == OrderStatus::Created && now >= order.expires_at_ms {
                OrderStatus::Expired
            } else {
                to
            };
            if !order.status.can_become(to_now) {
                return Ok(reply(pb::TransitionOutcome::Illegal, Some(&order)));
            }
            if self
                .store
                .transition(&order.id, order.status, order.version, to_now, now)
                .await
                .map_err(internal)?
            {
                if to_now.releases_stock() {
                    // The transition is committed; a release that fails now (or that has no
                    // time left in the caller's budget, so is not sent) is retried by the
                    // sweeper, so the answer is still "done".
                    match pass_on(deadline, RELEASE_RESERVE, RELEASE_TIMEOUT) {
                        Some(budget) => {
                            if let Err(e) = release_stock_within(
                                &*self.store,
                                &*self.releaser,
                                &order.id,
                                budget,
                            )
                            .await
                            {
                                tracing::warn!(error = %e, order_id = %order.id, "release bookkeeping failed; the sweeper retries");
                            }
                        }
                        None => {
                            tracing::debug!(order_id = %order.id, "no budget left to release now; the sweeper releases");
                        }
                    }
                }
                let done = Order {
                    status: to_now,
                    version: order.version + 1,
                    updated_at_ms: now,
                    ..order
                };
                let outcome = if to_now == to {
                    pb::TransitionOutcome::Done
                } else {
                    pb::TransitionOutcome::Illegal
                };
                return Ok(reply(outcome, Some(&done)));
            }
        }
        Err(Status::aborted("order changed concurrently; retry"))
    }
}

fn reply(outcome: pb::TransitionOutcome, order: Option<&Order>) -> pb::TransitionReply {
    pb::TransitionReply {
        outcome: outcome.into(),
        order: order.map(order_to_pb),
    }
}

/// Most items one `SubmitMany` call may carry.
pub const MAX_BATCH_ITEMS: usize = 1024;

/// The order request of a submit, once it is known to be well-formed.
fn checked_submit(request: pb::SubmitRequest) -> Result<pb::OrderRequest, Status> {
    let order = request
        .order
        .ok_or_else(|| Status::invalid_argument("order is required"))?;
    let now = flashsale_storage::now_ms();
    if order.accepted_at_ms > now.saturating_add(MAX_CLOCK_SKEW_MS) {
        return Err(Status::invalid_argument("accepted_at_ms is in the future"));
    }
    if order.order_id.is_empty() || order.quantity < 1 || order.idempotency_key.is_empty() {
        return Err(Status::invalid_argument(
            "order_id, quantity ≥ 1 and idempotency_key are required",
        ));
    }
    // The widths of the key columns on every engine (MySQL's `INSERT IGNORE` would truncate),
    // and ids in one case (MySQL compares them case-insensitively).
    let canonical_id = order
        .order_id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if order.order_id.len() > MAX_ORDER_ID_BYTES
        || !canonical_id
        || order.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_BYTES
    {
        return Err(Status::invalid_argument(format!(
            "order_id must be at most {MAX_ORDER_ID_BYTES} lowercase letters, digits or '-', \
             idempotency_key at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes"
        )));
    }
    Ok(order)
}

impl OrderService {
    /// Durably queues one order request inside its own `order.enqueue` span: a child of
    /// `parent` (the buy a batch item belongs to) or else of the current span.
    async fn publish(
        &self,
        order: pb::OrderRequest,
        parent: Option<TraceContext>,
    ) -> Result<(), Status> {
        // The durable publish is its own span (a producer): the consumer's batch span links to
        // it, so a trace shows the time spent in the queue's commit and where the order went.
        let enqueue = tracing::info_span!("order.enqueue", otel.kind = "producer");
        if let Some(parent) = &parent {
            flashsale_telemetry::span::set_remote_parent(&enqueue, parent);
        }
        let trace = enqueue.in_scope(flashsale_telemetry::span::current_span_context);
        self.queue
            .publish(OrderRequest {
                order_id: order.order_id,
                user_id: order.user_id,
                sale_id: order.sale_id,
                quantity: order.quantity,
                price_cents: order.price_cents,
                idempotency_key: order.idempotency_key,
                accepted_at_ms: order.accepted_at_ms,
                trace,
            })
            .instrument(enqueue)
            .await
            .map_err(|e| match e {
                QueueError::Stale { .. } => Status::deadline_exceeded(e.to_string()),
                e => {
                    tracing::error!(error = %e, "order publish failed");
                    Status::unavailable("order queue unavailable")
                }
            })
    }
}

#[tonic::async_trait]
impl Orders for OrderService {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitReply>, Status> {
        let order = checked_submit(request.into_inner())?;
        self.publish(order, None).await?;
        Ok(Response::new(pb::SubmitReply {}))
    }

    async fn submit_many(
        &self,
        request: Request<pb::SubmitManyRequest>,
    ) -> Result<Response<pb::SubmitManyReply>, Status> {
        let items = request.into_inner().items;
        if items.len() > MAX_BATCH_ITEMS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_BATCH_ITEMS} items per call"
            )));
        }
        // All published at once: the queue commits them together (one journal transaction, or
        // NATS publishes in flight side by side), each answered on its own.
        let published = items.into_iter().map(|item| async move {
            let parent = TraceContext::parse(&item.traceparent);
            let order = checked_submit(item.request.unwrap_or_default())?;
            self.publish(order, parent).await
        });
        let results = futures::future::join_all(published)
            .await
            .into_iter()
            .map(|result| pb::SubmitResult {
                result: Some(match result {
                    Ok(()) => pb::submit_result::Result::Reply(pb::SubmitReply {}),
                    Err(status) => pb::submit_result::Result::Error(pb::ItemError {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    }),
                }),
            })
            .collect();
        Ok(Response::new(pb::SubmitManyReply { results }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::GetOrderReply>, Status> {
        let r = request.into_inner();
        let order = self.find(&r.order_id, r.user_id).await?;
        Ok(Response::new(pb::GetOrderReply {
            order: order.as_ref().map(order_to_pb),
        }))
    }

    async fn list_orders(
        &self,
        request: Request<pb::ListOrdersRequest>,
    ) -> Result<Response<pb::ListOrdersReply>, Status> {
        let user_id = request.into_inner().user_id;
        // Queue first, table second (see `find`): an order moving between them is not missed.
        let queued = self
            .queue
            .find_for_user(user_id, LIST_LIMIT)
            .await
            .map_err(internal)?;
        let stored = self.store.list_for_user(user_id).await.map_err(internal)?;
        let stored_ids: std::collections::HashSet<&str> =
            stored.iter().map(|o| o.id.as_str()).collect();
        let mut orders: Vec<Order> = queued
            .iter()
            .filter(|r| !stored_ids.contains(r.order_id.as_str()))
            .map(Order::pending)
            .collect();
        orders.extend(stored.iter().cloned());
        orders.sort_by(|a, b| {
            b.created_at_ms
                .cmp(&a.created_at_ms)
                .then_with(|| a.id.cmp(&b.id))
        });
        orders.truncate(usize::try_from(LIST_LIMIT).unwrap_or(usize::MAX));
        Ok(Response::new(pb::ListOrdersReply {
            orders: orders.iter().map(order_to_pb).collect(),
        }))
    }

    async fn pay(
        &self,
        request: Request<pb::TransitionRequest>,
    ) -> Result<Response<pb::TransitionReply>, Status> {
        let deadline = incoming_deadline(&request);
        let r = request.into_inner();
        self.transition(&r.order_id, r.user_id, OrderStatus::Paid, deadline)
            .await
            .map(Response::new)
    }

    async fn cancel(
        &self,
        request: Request<pb::TransitionRequest>,
    ) -> Result<Response<pb::TransitionReply>, Status> {
        let deadline = incoming_deadline(&request);
        let r = request.into_inner();
        self.transition(&r.order_id, r.user_id, OrderStatus::Cancelled, deadline)
            .await
            .map(Response::new)
    }
}
