//! The inventory's catalog when order requests queue on NATS JetStream instead of the database.
//!
//! The inventory must count every accepted request as holding stock: those persisted (`orders`)
//! and those still queued. With the journal both are tables of one database, read in one
//! statement. With `order.queue = "nats"` the queued ones are the messages of the JetStream
//! stream (work-queue retention: exactly the requests not acknowledged yet), so
//! [`QueuedCatalog`] reads the stream **first** and the database **second**. The order consumer
//! moves a request the other way round — it commits the order, then acknowledges (deletes) the
//! message — so a request moving between them during the two reads is seen at least once,
//! never missed.

use std::collections::HashSet;

use async_trait::async_trait;
use flashsale_inventory::{
    catalog::{Catalog, CatalogError, SqlCatalog, StoredReservation},
    sale::{NewSale, Sale},
};
use flashsale_order::queue::{nats::NatsStream, QueueError};

/// [`SqlCatalog`] plus the requests waiting on the NATS order stream.
#[derive(Debug)]
pub struct QueuedCatalog {
    sql: SqlCatalog,
    stream: NatsStream,
}

impl QueuedCatalog {
    /// The catalog over the database and the order stream.
    pub fn new(sql: SqlCatalog, stream: NatsStream) -> Self {
        Self { sql, stream }
    }
}

fn queue_error(e: QueueError) -> CatalogError {
    CatalogError::Queue(Box::new(e))
}

#[async_trait]
impl Catalog for QueuedCatalog {
    async fn create(&self, sale: &NewSale) -> Result<Sale, CatalogError> {
        self.sql.create(sale).await
    }

    async fn list(&self) -> Result<Vec<Sale>, CatalogError> {
        self.sql.list().await
    }

    async fn load_reservations(&self) -> Result<Vec<StoredReservation>, CatalogError> {
        let queued = self.stream.queued().await.map_err(queue_error)?;
        let mut reservations = self.sql.load_reservations().await?;
        let known: HashSet<String> = reservations.iter().map(|r| r.order_id.clone()).collect();
        reservations.extend(
            queued
                .into_iter()
                .filter(|r| !known.contains(&r.order_id))
                .map(|r| StoredReservation {
                    order_id: r.order_id,
                    sale_id: r.sale_id,
                    user_id: r.user_id,
                    quantity: r.quantity,
                    released: false,
                }),
        );
        Ok(reservations)
    }

    async fn known_orders(&self, order_ids: &[String]) -> Result<Vec<String>, CatalogError> {
        let mut known = self
            .stream
            .queued_ids(order_ids)
            .await
            .map_err(queue_error)?;
        let queued: HashSet<&String> = known.iter().collect();
        let rest: Vec<String> = order_ids
            .iter()
            .filter(|id| !queued.contains(id))
            .cloned()
            .collect();
        known.extend(self.sql.known_orders(&rest).await?);
        Ok(known)
    }
}
