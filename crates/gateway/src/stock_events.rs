//! Following the inventory's stock events, so every gateway answers a sold-out sale locally.
//!
//! With the stock in Redis, the inventory publishes `sold_out` the moment a sale's last unit is
//! taken and `restocked` the moment a cancelled, expired or voided reservation gives one back
//! (`flashsale_redis::events`). This gateway subscribes and marks the sale in its
//! [`SaleCache`]: a pushed sold-out flag holds until the restock event, so during the sold-out
//! stampede no buy reaches the inventory at all, and a unit given back is buyable at once.
//! Pub/sub is at-most-once: when the subscription drops, every pushed flag is forgotten (the
//! gateway falls back to learning sold-outs from the inventory's answers, for
//! `sold_out_cache_ms`) until it has subscribed again.

use std::time::Duration;

use flashsale_redis::{
    events::{StockEvent, STOCK_EVENTS},
    RedisConfig,
};
use futures::StreamExt;

use crate::sales_cache::SaleCache;

/// How long to wait before subscribing again after the subscription failed.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// Applies stock events to `sales` forever (the caller aborts the task).
pub async fn follow(config: RedisConfig, sales: SaleCache) {
    let channel = format!("{}{STOCK_EVENTS}", config.key_prefix);
    loop {
        match flashsale_redis::subscriber(&config).await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => {
                    tracing::info!(%channel, "following stock events");
                    let mut messages = pubsub.on_message();
                    while let Some(message) = messages.next().await {
                        let Ok(payload) = message.get_payload::<String>() else {
                            continue;
                        };
                        match StockEvent::parse(&payload) {
                            Some(event) => sales.apply(event).await,
                            None => tracing::warn!(%payload, "unknown stock event"),
                        }
                    }
                    tracing::warn!("stock events subscription ended; resubscribing");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to stock events"),
            },
            Err(e) => tracing::warn!(error = %e, "cannot connect for stock events"),
        }
        // Whatever was pushed may have been undone while we were not listening.
        sales.forget_pushed();
        tokio::time::sleep(RESUBSCRIBE_AFTER).await;
    }
}
