//! gRPC clients of the services behind the gateway, and the per-request call context.
//!
//! Each service is reached through a [`Balanced`] channel: one lazily-connected HTTP/2 channel
//! to a fixed address, or a pool balanced over the instances the registry (or a static list)
//! names (`flashsale_registry::balance`). Every call goes through a [`CallContext`]: it carries
//! what is left of the request budget as the gRPC deadline (`grpc-timeout`), is not sent at all
//! when nothing is left, stops waiting when the budget is spent (`504`), and sends the request
//! id and a child W3C `traceparent` as metadata so the service logs under the same trace.
//! Idempotent calls go through [`CallContext::retry`]: a call an instance could not take is
//! tried again (on whichever instance the balancer picks) after a jittered backoff, only while
//! the budget still has room.

use std::{future::Future, time::Duration};

use axum::{extract::FromRequestParts, http::request::Parts};
use flashsale_proto::{
    auth::auth_client::AuthClient,
    inventory::{self as inventory_pb, inventory_client::InventoryClient},
    order::{self as order_pb, orders_client::OrdersClient},
};
pub use flashsale_registry::AddressError;
use flashsale_registry::{retry, Balanced};
use flashsale_telemetry::{TraceContext, REQUEST_ID_HEADER, TRACEPARENT_HEADER};
use tokio::time::Instant;
use tonic::metadata::MetadataValue;

use crate::{
    batch::{self, BatchCall, BatchConfig, BatchResult, Batcher, BoxFuture, Calls},
    buy::in_process::SharedInProcessBuy,
    error::ApiError,
};

/// Clients of the auth, inventory and order services.
#[derive(Clone)]
pub struct Upstreams {
    /// Auth service.
    pub auth: AuthClient<Balanced>,
    /// Inventory service.
    pub inventory: InventoryClient<Balanced>,
    /// Order service.
    pub orders: OrdersClient<Balanced>,
    /// The buy path's `Reserve` and `Submit` called in this process instead of through the
    /// clients above (set with [`Upstreams::with_in_process_buy`]).
    pub in_process_buy: Option<SharedInProcessBuy>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("in_process_buy", &self.in_process_buy.is_some())
            .finish_non_exhaustive()
    }
}

impl Upstreams {
    /// Clients over these channels.
    pub fn new(auth: Balanced, inventory: Balanced, orders: Balanced) -> Self {
        Self {
            auth: AuthClient::new(auth),
            inventory: InventoryClient::new(inventory),
            orders: OrdersClient::new(orders),
            in_process_buy: None,
        }
    }

    /// The same, with the buy path's two calls made to services in this process
    /// ([`crate::buy::in_process`]).
    pub fn with_in_process_buy(self, buy: SharedInProcessBuy) -> Self {
        Self {
            in_process_buy: Some(buy),
            ..self
        }
    }

    /// Clients for services at these fixed addresses (`host:port` or `http://host:port`);
    /// connects on first use and reconnects after failures.
    pub fn connect_lazy(auth: &str, inventory: &str, orders: &str) -> Result<Self, AddressError> {
        Ok(Self::new(
            Balanced::direct(auth)?,
            Balanced::direct(inventory)?,
            Balanced::direct(orders)?,
        ))
    }
}

/// The buy path's two calls, batched under load ([`crate::batch`]).
#[derive(Debug, Clone)]
pub struct BuyCalls {
    /// Inventory `Reserve` (`ReserveMany` for a batch).
    pub reserve: Batcher<ReserveCalls>,
    /// Order `Submit` (`SubmitMany` for a batch).
    pub submit: Batcher<SubmitCalls>,
}

impl BuyCalls {
    /// Starts the batching of both calls over these clients (on the current tokio runtime).
    pub fn spawn(upstreams: &Upstreams, config: BatchConfig) -> Self {
        Self {
            reserve: Batcher::spawn(Calls(ReserveCalls(upstreams.inventory.clone())), config),
            submit: Batcher::spawn(Calls(SubmitCalls(upstreams.orders.clone())), config),
        }
    }
}

/// A batch item's error as the status its unary call would have failed with.
fn item_status(code: i32, message: String) -> tonic::Status {
    tonic::Status::new(tonic::Code::from(code), message)
}

/// Declares a [`BatchCall`] over a unary RPC and its batch RPC. The two pairs the buy path
/// batches have the same shape in their protos (`XItem { request, traceparent }`, `XResult {
/// oneof result { reply, error } }`), only the generated names differ.
macro_rules! batch_call {
    ($(#[$doc:meta])* $name:ident($client:ty) {
        name: $label:literal,
        unary: $unary:ident($message:ty) -> $reply:ty,
        batch: $many:ident($many_request:ident { $item:ident }),
        result: $result:path,
    }) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name($client);

        impl BatchCall for $name {
            type Message = $message;
            type Reply = $reply;
            const NAME: &'static str = $label;

            fn one(
                &self,
                request: tonic::Request<Self::Message>,
            ) -> BoxFuture<Result<Self::Reply, tonic::Status>> {
                let mut client = self.0.clone();
                Box::pin(async move { Ok(client.$unary(request).await?.into_inner()) })
            }

            fn many(
                &self,
                request: tonic::Request<Vec<(Self::Message, String)>>,
            ) -> BoxFuture<BatchResult<Self::Reply>> {
                use $result as Item;
                let mut client = self.0.clone();
                let request = request.map(|items| $many_request {
                    items: items
                        .into_iter()
                        .map(|(request, traceparent)| $item {
                            request: Some(request),
                            traceparent,
                        })
                        .collect(),
                });
                Box::pin(async move {
                    let reply = client.$many(request).await?.into_inner();
                    Ok(reply
                        .results
                        .into_iter()
                        .map(|r| match r.result {
                            Some(Item::Reply(reply)) => Ok(reply),
                            Some(Item::Error(e)) => Err(item_status(e.code, e.message)),
                            None => Err(tonic::Status::internal("an empty batch result")),
                        })
                        .collect())
                })
            }
        }
    };
}

use inventory_pb::{ReserveItem, ReserveManyRequest};
use order_pb::{SubmitItem, SubmitManyRequest};

batch_call! {
    /// Inventory `Reserve`, alone or as `ReserveMany`.
    ReserveCalls(InventoryClient<Balanced>) {
        name: "reserve",
        unary: reserve(inventory_pb::ReserveRequest) -> inventory_pb::ReserveReply,
        batch: reserve_many(ReserveManyRequest { ReserveItem }),
        result: inventory_pb::reserve_result::Result,
    }
}

batch_call! {
    /// Order `Submit`, alone or as `SubmitMany`.
    SubmitCalls(OrdersClient<Balanced>) {
        name: "submit",
        unary: submit(order_pb::SubmitRequest) -> order_pb::SubmitReply,
        batch: submit_many(SubmitManyRequest { SubmitItem }),
        result: order_pb::submit_result::Result,
    }
}

/// When the current request's budget runs out; set by the budget middleware.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

/// What every upstream call of one request carries: deadline, trace context, request id.
#[derive(Debug, Clone)]
pub struct CallContext {
    deadline: Instant,
    trace: TraceContext,
    /// Whether `trace` is the current recorded span's own context (sent as it is) rather than
    /// the request's hand-made one (a child is sent).
    trace_is_span: bool,
    request_id: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl CallContext {
    /// A context with this deadline and a fresh trace (for calls outside a request).
    pub fn detached(budget: Duration) -> Self {
        Self {
            deadline: Instant::now() + budget,
            trace: TraceContext::new_root(),
            trace_is_span: false,
            request_id: None,
        }
    }

    /// Wraps a message into a request carrying the remaining budget and the metadata.
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, ApiError> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ApiError::timeout());
        }
        let mut request = tonic::Request::new(message);
        request.set_timeout(remaining);
        let metadata = request.metadata_mut();
        let parent = if self.trace_is_span {
            self.trace
        } else {
            self.trace.child()
        };
        if let Ok(value) = MetadataValue::try_from(&parent.header_bytes()[..]) {
            metadata.insert(TRACEPARENT_HEADER, value);
        }
        if let Some(id) = &self.request_id {
            metadata.insert(REQUEST_ID_HEADER, id.clone());
        }
        Ok(request)
    }

    /// Runs a call, giving up when the budget is spent; maps failures to API errors.
    pub async fn run<T, F>(&self, call: F) -> Result<T, ApiError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout_at(self.deadline, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(ApiError::from_status(status)),
            Err(_) => Err(ApiError::timeout()),
        }
    }

    /// Runs an idempotent call (`call` sends one attempt of `message`), retrying failures an
    /// instance could not take with jittered backoff while the budget has room for another
    /// attempt. Never use it for a call that must not run twice.
    pub async fn retry<M, T, F, Fut>(&self, message: M, mut call: F) -> Result<T, ApiError>
    where
        M: Clone,
        F: FnMut(tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut retries = 0;
        loop {
            let attempt = call(self.request(message.clone())?);
            let status = match tokio::time::timeout_at(self.deadline, attempt).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => return Err(ApiError::timeout()),
            };
            retries += 1;
            let delay = retry::retryable(&status)
                .then(|| retry::next_delay(retries, self.deadline))
                .flatten();
            match delay {
                Some(delay) => {
                    tracing::debug!(code = ?status.code(), retries, "retrying an idempotent call");
                    tokio::time::sleep(delay).await;
                }
                None => return Err(ApiError::from_status(status)),
            }
        }
    }

    /// Like [`CallContext::retry`], for a call sent through a [`Batcher`]: each attempt rides
    /// alone or in the next batch, with this request's deadline and trace context.
    pub async fn retry_batched<C>(
        &self,
        message: C::Message,
        batcher: &Batcher<C>,
    ) -> Result<C::Reply, ApiError>
    where
        C: BatchCall,
        C::Message: Clone,
    {
        self.retry(message, |request| {
            batch::call(batcher, request, self.deadline)
        })
        .await
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CallContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let deadline = parts
            .extensions
            .get::<Deadline>()
            .map(|d| d.0)
            .unwrap_or_else(|| Instant::now() + Duration::from_millis(500));
        let (trace, trace_is_span) = flashsale_telemetry::span::current_trace(
            flashsale_telemetry::span::request_trace(&parts.extensions, &parts.headers),
        );
        let request_id = parts
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Self {
            deadline,
            trace,
            trace_is_span,
            request_id,
        })
    }
}
