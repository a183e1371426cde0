//! The buy path's two calls to services in this very process (`flashsale dev` with one
//! instance): [`InProcessBuy`] calls the inventory's `Reserve` and the order service's `Submit`
//! through the generated service traits the gRPC servers implement — the same code behind the
//! same `tonic::Request` (deadline and trace metadata included) — without encoding a message,
//! building an HTTP request or crossing a task.
//!
//! Each call still gets the span its gRPC server would open (`flashsale.inventory.v1.
//! Inventory/Reserve`, kind server, a child of the buy's span), so a buy's trace shows every
//! service it crossed whether or not the hop is a network hop. No batching: a batch pays where
//! a call costs a round trip; here the order service's group commit already gathers concurrent
//! buys into one transaction, and the inventory decides each reserve in memory or in one
//! script call.

use std::sync::Arc;

use async_trait::async_trait;
use flashsale_proto::{
    inventory::{inventory_server::Inventory, ReserveReply, ReserveRequest},
    order::{orders_server::Orders, SubmitReply, SubmitRequest},
};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

/// `Reserve` and `Submit` answered in this process.
#[async_trait]
pub trait InProcessBuy: Send + Sync + 'static {
    /// The inventory's `Reserve`.
    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveReply>, Status>;
    /// The order service's `Submit`.
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitReply>, Status>;
}

/// The buy path's calls, shared by every request of the gateway.
pub type SharedInProcessBuy = Arc<dyn InProcessBuy>;

/// An inventory and an order service of this process, as the buy path calls them.
#[derive(Debug, Clone)]
pub struct LocalServices<I, O> {
    inventory: I,
    orders: O,
}

impl<I: Inventory, O: Orders> LocalServices<I, O> {
    /// The buy path's calls to these two services.
    pub fn shared(inventory: I, orders: O) -> SharedInProcessBuy {
        Arc::new(Self { inventory, orders })
    }
}

/// The span the gRPC server of `method` opens for a call: a child of the current (the buy's)
/// span.
fn server_span(method: &'static str) -> tracing::Span {
    tracing::info_span!(
        "request",
        otel.name = method,
        otel.kind = "server",
        rpc.system = "grpc",
    )
}

#[async_trait]
impl<I: Inventory, O: Orders> InProcessBuy for LocalServices<I, O> {
    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveReply>, Status> {
        self.inventory
            .reserve(request)
            .instrument(server_span("flashsale.inventory.v1.Inventory/Reserve"))
            .await
    }

    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitReply>, Status> {
        self.orders
            .submit(request)
            .instrument(server_span("flashsale.order.v1.Orders/Submit"))
            .await
    }
}
