//! What the order side tells the inventory about stock held by accepted orders
//! ([`HeldStock`], the port defined in the kernel), for each queue engine.
//!
//! The inventory must count every accepted request as holding stock: those written to `orders`
//! and those still queued. Where the queued ones are depends on the engine, so the answer is
//! written here, beside the engines, and chosen by [`held_stock`] from `order.queue`:
//!
//! * [`JournalHeld`]: the journal is a table of the same database, so one statement reads both
//!   (one consistent snapshot while the consumer moves requests from `order_queue` to `orders`).
//! * [`NatsHeld`]: the queued requests are the messages of the JetStream stream (work-queue
//!   retention: exactly the ones not acknowledged yet). It reads the stream **first** and the
//!   database **second**; the consumer moves a request the other way round — it commits the
//!   order, then acknowledges (deletes) the message — so a request moving between them during
//!   the two reads is seen at least once, never missed.

use std::{collections::HashSet, sync::Arc};

use async_trait::async_trait;
use flashsale_kernel::held_stock::{HeldStock, HeldStockError, StoredReservation};
use flashsale_storage::{with_pool, Database};
use sqlx::QueryBuilder;

use crate::{
    config::{OrderConfig, QueueBackend},
    queue::{nats::NatsStream, QueueError},
};

/// The order side's answer for `config.queue` (the NATS one connects to the stream). The order
/// tables are migrated first: the inventory may start before any order process has.
pub async fn held_stock(
    config: &OrderConfig,
    db: Database,
) -> Result<Arc<dyn HeldStock>, QueueError> {
    db.migrate(crate::schema)
        .await
        .map_err(QueueError::Schema)?;
    Ok(match config.queue {
        // The direct intake keeps nothing outside `orders`; the journal table is then empty.
        QueueBackend::Direct | QueueBackend::Journal => Arc::new(JournalHeld::new(db)),
        QueueBackend::Nats => Arc::new(NatsHeld::new(
            JournalHeld::new(db),
            NatsStream::connect(&config.nats).await?,
        )),
    })
}

/// Orders and the queue journal, both in the SQL database (any engine).
#[derive(Debug, Clone)]
pub struct JournalHeld {
    db: Database,
}

impl JournalHeld {
    /// Over an open, migrated database.
    pub fn new(db: impl Into<Database>) -> Self {
        Self { db: db.into() }
    }

    /// The same, as the port's trait object.
    pub fn shared(db: impl Into<Database>) -> Arc<dyn HeldStock> {
        Arc::new(Self::new(db))
    }
}

fn storage(e: sqlx::Error) -> HeldStockError {
    HeldStockError::new(e)
}

#[async_trait]
impl HeldStock for JournalHeld {
    async fn reservations(&self) -> Result<Vec<StoredReservation>, HeldStockError> {
        // One statement, so one consistent snapshot even while the order consumer moves
        // requests from the journal into `orders`.
        let rows: Vec<(String, i64, i64, i64, bool)> = self
            .db
            .fetch_all(
                "SELECT id, sale_id, user_id, quantity, status IN ('cancelled', 'expired') FROM orders
                 UNION ALL
                 SELECT q.order_id, q.sale_id, q.user_id, q.quantity, FALSE FROM order_queue q
                 WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = q.order_id)",
                &[],
            )
            .await
            .map_err(storage)?;
        Ok(rows
            .into_iter()
            .map(
                |(order_id, sale_id, user_id, quantity, released)| StoredReservation {
                    order_id,
                    sale_id,
                    user_id,
                    quantity,
                    released,
                },
            )
            .collect())
    }

    async fn known(&self, order_ids: &[String]) -> Result<Vec<String>, HeldStockError> {
        let mut known = Vec::new();
        for chunk in order_ids.chunks(500) {
            let rows: Vec<(String,)> = with_pool!(&self.db, pool, DB => {
                let mut qb = QueryBuilder::<DB>::new("SELECT id FROM orders WHERE id IN (");
                let mut ids = qb.separated(", ");
                for id in chunk {
                    ids.push_bind(id);
                }
                qb.push(") UNION SELECT order_id FROM order_queue WHERE order_id IN (");
                let mut ids = qb.separated(", ");
                for id in chunk {
                    ids.push_bind(id);
                }
                qb.push(")");
                qb.build_query_as().fetch_all(pool).await
            })
            .map_err(storage)?;
            known.extend(rows.into_iter().map(|(id,)| id));
        }
        Ok(known)
    }
}

/// The orders table plus the requests waiting on the NATS order stream.
#[derive(Debug)]
pub struct NatsHeld {
    sql: JournalHeld,
    stream: NatsStream,
}

impl NatsHeld {
    /// Over the database and the order stream.
    pub fn new(sql: JournalHeld, stream: NatsStream) -> Self {
        Self { sql, stream }
    }
}

fn queue(e: QueueError) -> HeldStockError {
    HeldStockError::new(e)
}

#[async_trait]
impl HeldStock for NatsHeld {
    async fn reservations(&self) -> Result<Vec<StoredReservation>, HeldStockError> {
        let queued = self.stream.queued().await.map_err(queue)?;
        let mut reservations = self.sql.reservations().await?;
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

    async fn known(&self, order_ids: &[String]) -> Result<Vec<String>, HeldStockError> {
        let mut known = self.stream.queued_ids(order_ids).await.map_err(queue)?;
        let queued: HashSet<&String> = known.iter().collect();
        let rest: Vec<String> = order_ids
            .iter()
            .filter(|id| !queued.contains(id))
            .cloned()
            .collect();
        known.extend(self.sql.known(&rest).await?);
        Ok(known)
    }
}
