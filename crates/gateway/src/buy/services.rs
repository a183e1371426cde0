//! The gateway's [`BuyUpstream`]: the inventory and order services over gRPC (within the
//! request's budget, retried while it has room, batched under load) — or called in this
//! process ([`super::in_process`]) — and the configured rate limiter.

use std::net::IpAddr;

use flashsale_proto::{
    inventory::{GetSaleRequest, ReserveReply, ReserveRequest, Sale},
    order::SubmitRequest,
};

use super::upstream::BuyUpstream;
use crate::{app::AppState, error::ApiError, upstream::CallContext};

/// The real upstream of one buy request.
#[derive(Debug, Clone, Copy)]
pub struct Services<'a> {
    state: &'a AppState,
    ctx: &'a CallContext,
}

impl<'a> Services<'a> {
    /// The services of `state`, called with the request's context (deadline, trace, id).
    pub fn new(state: &'a AppState, ctx: &'a CallContext) -> Self {
        Self { state, ctx }
    }
}

impl BuyUpstream for Services<'_> {
    async fn fetch_sale(&self, sale_id: i64) -> Result<Option<Sale>, ApiError> {
        let mut client = self.state.upstreams.inventory.clone();
        let request = self.ctx.request(GetSaleRequest { id: sale_id })?;
        Ok(self.ctx.run(client.get_sale(request)).await?.sale)
    }

    async fn charge(&self, client_ip: IpAddr, user_id: i64, sale_id: i64) -> Result<(), ApiError> {
        self.state
            .limits
            .check_buy(client_ip, user_id, sale_id)
            .await
    }

    async fn reserve(&self, request: ReserveRequest) -> Result<ReserveReply, ApiError> {
        // Reserve is idempotent per order id, so a call an instance could not take is retried.
        match &self.state.upstreams.in_process_buy {
            Some(local) => self.ctx.retry(request, |r| local.reserve(r)).await,
            None => {
                self.ctx
                    .retry_batched(request, &self.state.buy_calls.reserve)
                    .await
            }
        }
    }

    async fn submit(&self, request: SubmitRequest) -> Result<(), ApiError> {
        // Submit is idempotent per order id (the order id is kept once).
        match &self.state.upstreams.in_process_buy {
            Some(local) => self.ctx.retry(request, |r| local.submit(r)).await.map(drop),
            None => self
                .ctx
                .retry_batched(request, &self.state.buy_calls.submit)
                .await
                .map(drop),
        }
    }
}
