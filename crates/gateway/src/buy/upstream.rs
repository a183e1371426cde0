//! What the buy flow needs from outside this process: the [`BuyUpstream`] trait.
//!
//! Four calls: the sale's metadata (on a cache miss), the anti-brush limits, the inventory's
//! reserve and the order queue's submit. The gateway's implementation is
//! [`super::services::Services`] (gRPC and the configured limiter); the flow's unit tests use a
//! fake that answers from memory and counts the calls, so the whole flow runs without servers.

use std::{future::Future, net::IpAddr};

use flashsale_proto::{
    inventory::{ReserveReply, ReserveRequest, Sale},
    order::SubmitRequest,
};

use crate::error::ApiError;

/// The calls a buy makes beyond this gateway's memory.
pub trait BuyUpstream: Sync {
    /// The sale as the inventory knows it; `None` when it does not exist.
    fn fetch_sale(
        &self,
        sale_id: i64,
    ) -> impl Future<Output = Result<Option<Sale>, ApiError>> + Send;

    /// Charges one buy attempt against the anti-brush limits (per client IP, per user and
    /// sale): `429` when refused, `503` when the limiter cannot be reached.
    fn charge(
        &self,
        client_ip: IpAddr,
        user_id: i64,
        sale_id: i64,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// The inventory's atomic reserve (idempotent per order id).
    fn reserve(
        &self,
        request: ReserveRequest,
    ) -> impl Future<Output = Result<ReserveReply, ApiError>> + Send;

    /// Queues the order durably (idempotent per order id).
    fn submit(&self, request: SubmitRequest) -> impl Future<Output = Result<(), ApiError>> + Send;
}
