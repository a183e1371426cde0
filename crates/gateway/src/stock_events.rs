//! Following the inventory's stock events, so every gateway answers a sold-out sale locally.
//!
//! The inventory streams `sold_out` the moment a sale's last unit is taken (and again on every
//! buy it refuses for want of stock) and `restocked` the moment a cancelled, expired or voided
//! reservation gives one back (its `WatchStock` call; with shared stock in Redis it relays every
//! instance's events, with stock in memory its own). This gateway watches and marks the sale in
//! its [`SaleCache`]: a pushed sold-out flag holds until the restock event, so during the
//! sold-out stampede no buy reaches the inventory at all, and a unit given back is buyable at
//! once. Delivery is at most once: when the stream ends or fails, every pushed flag is
//! forgotten (the gateway falls back to learning sold-outs from the inventory's answers, for
//! `sold_out_cache_ms`) until it watches again.

use std::time::Duration;

use flashsale_kernel::StockEvent;
use flashsale_proto::inventory::{
    inventory_client::InventoryClient, StockEventKind, WatchStockRequest,
};
use flashsale_registry::Balanced;

use crate::sales_cache::SaleCache;

/// How long to wait before watching again after the stream ended or failed.
const REWATCH_AFTER: Duration = Duration::from_secs(1);

/// The event a streamed message means, if the gateway knows its kind.
fn event(message: &flashsale_proto::inventory::StockEvent) -> Option<StockEvent> {
    match message.kind() {
        StockEventKind::SoldOut => Some(StockEvent::SoldOut(message.sale_id)),
        StockEventKind::Restocked => Some(StockEvent::Restocked(message.sale_id)),
        StockEventKind::Unspecified => None,
    }
}

/// Applies the inventory's stock events to `sales` forever (the caller aborts the task).
pub async fn follow(mut inventory: InventoryClient<Balanced>, sales: SaleCache) {
    loop {
        match inventory.watch_stock(WatchStockRequest {}).await {
            Ok(response) => {
                tracing::info!("following stock events");
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(message)) => match event(&message) {
                            Some(event) => sales.apply(event).await,
                            None => tracing::warn!(?message, "unknown stock event"),
                        },
                        Ok(None) => {
                            tracing::info!("stock events stream ended; watching again");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(%status, "stock events stream failed; watching again");
                            break;
                        }
                    }
                }
            }
            Err(status) => tracing::warn!(%status, "cannot watch stock events"),
        }
        // Whatever was pushed may have been undone while we were not listening.
        sales.forget_pushed();
        tokio::time::sleep(REWATCH_AFTER).await;
    }
}
