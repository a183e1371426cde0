//! Giving stock back to the inventory service.
//!
//! [`StockReleaser`] is what the order service needs from inventory; the production
//! implementation is the inventory gRPC client (balanced over the inventory instances).
//! Release is idempotent per order id on the inventory side, so retrying after an unknown
//! outcome is always safe. A release made while serving a request (cancel) gets what is left
//! of that request's deadline ([`StockReleaser::release_within`]); background releases (the
//! sweeper) get [`RELEASE_TIMEOUT`].

use std::time::Duration;

use async_trait::async_trait;
use flashsale_proto::inventory::{inventory_client::InventoryClient, ReleaseRequest};
use flashsale_registry::Balanced;

/// Budget of a release made outside any request.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Release failures (the inventory service could not be reached or failed).
#[derive(Debug, thiserror::Error)]
#[error("stock release failed: {0}")]
pub struct ReleaseError(#[from] tonic::Status);

/// Gives an order's stock back.
#[async_trait]
pub trait StockReleaser: Send + Sync + 'static {
    /// Releases the order's reservation; `Ok` whether or not it was still held.
    async fn release(&self, order_id: &str) -> Result<(), ReleaseError>;

    /// Like [`StockReleaser::release`], giving up after `budget` (sent as the gRPC deadline).
    async fn release_within(&self, order_id: &str, budget: Duration) -> Result<(), ReleaseError> {
        let _ = budget;
        self.release(order_id).await
    }
}

#[async_trait]
impl StockReleaser for InventoryClient<Balanced> {
    async fn release(&self, order_id: &str) -> Result<(), ReleaseError> {
        self.release_within(order_id, RELEASE_TIMEOUT).await
    }

    async fn release_within(&self, order_id: &str, budget: Duration) -> Result<(), ReleaseError> {
        let mut client = self.clone();
        let mut request = tonic::Request::new(ReleaseRequest {
            order_id: order_id.to_owned(),
        });
        request.set_timeout(budget);
        if let Some(parent) = flashsale_telemetry::span::current_traceparent()
            .and_then(|t| t.parse::<tonic::metadata::MetadataValue<_>>().ok())
        {
            request
                .metadata_mut()
                .insert(flashsale_telemetry::TRACEPARENT_HEADER, parent);
        }
        InventoryClient::release(&mut client, request).await?;
        Ok(())
    }
}
