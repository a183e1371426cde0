//! Giving stock back to the inventory service.
//!
//! [`StockReleaser`] is what the order service needs from inventory; the production
//! implementation is the inventory gRPC client. Release is idempotent per order id on the
//! inventory side, so retrying after an unknown outcome is always safe.

use async_trait::async_trait;
use flashsale_proto::inventory::{inventory_client::InventoryClient, ReleaseRequest};
use tonic::transport::Channel;

/// Release failures (the inventory service could not be reached or failed).
#[derive(Debug, thiserror::Error)]
#[error("stock release failed: {0}")]
pub struct ReleaseError(#[from] tonic::Status);

/// Gives an order's stock back.
#[async_trait]
pub trait StockReleaser: Send + Sync + 'static {
    /// Releases the order's reservation; `Ok` whether or not it was still held.
    async fn release(&self, order_id: &str) -> Result<(), ReleaseError>;
}

#[async_trait]
impl StockReleaser for InventoryClient<Channel> {
    async fn release(&self, order_id: &str) -> Result<(), ReleaseError> {
        let mut client = self.clone();
        let mut request = tonic::Request::new(ReleaseRequest {
            order_id: order_id.to_owned(),
        });
        request.set_timeout(std::time::Duration::from_secs(2));
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
