//! Order storage: batch inserts that absorb duplicates, reads, and optimistic-locking
//! transitions.
//!
//! [`OrderStore`] is the trait; [`SqlOrderStore`] implements it on the SQL database, whichever
//! engine it is (each statement is written once and run on SQLite, PostgreSQL and MySQL through
//! [`flashsale_storage::with_pool`]). Inserts skip rows whose order id or
//! `(user_id, idempotency_key)` already exist (`ON CONFLICT DO NOTHING`, MySQL: `INSERT IGNORE`),
//! so a redelivered queue message creates nothing new. A transition updates a row only if its `version` is still
//! the one read (`UPDATE … WHERE id = ? AND version = ?`); a lost race is retried on fresh data.

use async_trait::async_trait;
use flashsale_storage::{with_pool, Arg, Database};
use sqlx::QueryBuilder;

use crate::model::{Order, OrderRequest, OrderStatus};

/// Storage errors; the cause is logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("order storage failed: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored status is not one we know.
    #[error("order {0} has an unknown status")]
    CorruptStatus(String),
}

/// Order storage.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Inserts requests as `created` orders expiring `payment_timeout_ms` after acceptance;
    /// skips duplicates. Returns how many rows were new.
    async fn insert_batch(
        &self,
        requests: &[OrderRequest],
        payment_timeout_ms: i64,
    ) -> Result<u64, StoreError>;
    /// One order.
    async fn get(&self, order_id: &str) -> Result<Option<Order>, StoreError>;
    /// A user's orders, newest first.
    async fn list_for_user(&self, user_id: i64) -> Result<Vec<Order>, StoreError>;
    /// Moves an order from `from` (at `version`) to `to`; `false` when the row changed meanwhile.
    async fn transition(
        &self,
        order_id: &str,
        from: OrderStatus,
        version: i64,
        to: OrderStatus,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Unpaid orders whose payment time is over.
    async fn due_for_expiry(&self, now_ms: i64, limit: i64) -> Result<Vec<Order>, StoreError>;
    /// Cancelled/expired orders whose stock has not been confirmed released.
    async fn unreleased(&self, limit: i64) -> Result<Vec<Order>, StoreError>;
    /// Records that an order's stock went back to the sale.
    async fn mark_released(&self, order_id: &str) -> Result<(), StoreError>;
}

/// Orders in the SQL database.
#[derive(Debug, Clone)]
pub struct SqlOrderStore {
    db: Database,
}

impl SqlOrderStore {
    /// A store over an open, migrated database.
    pub fn new(db: impl Into<Database>) -> Self {
        Self { db: db.into() }
    }

    /// The orders `sql` (a `WHERE …` after [`SELECT_ORDER`], `?` placeholders) selects.
    async fn select(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Order>, StoreError> {
        let rows: Vec<OrderRow> = self
            .db
            .fetch_all(&format!("{SELECT_ORDER} {sql}"), args)
            .await?;
        from_rows(rows)
    }
}

const SELECT_ORDER: &str = "SELECT id, user_id, sale_id, quantity, price_cents, status, version, created_at_ms, updated_at_ms, expires_at_ms FROM orders";

type OrderRow = (String, i64, i64, i64, i64, String, i64, i64, i64, i64);

fn from_row(r: OrderRow) -> Result<Order, StoreError> {
    let status = OrderStatus::parse(&r.5).ok_or_else(|| StoreError::CorruptStatus(r.0.clone()))?;
    Ok(Order {
        id: r.0,
        user_id: r.1,
        sale_id: r.2,
        quantity: r.3,
        price_cents: r.4,
        status,
        version: r.6,
        created_at_ms: r.7,
        updated_at_ms: r.8,
        expires_at_ms: r.9,
    })
}

fn from_rows(rows: Vec<OrderRow>) -> Result<Vec<Order>, StoreError> {
    rows.into_iter().map(from_row).collect()
}

#[async_trait]
impl OrderStore for SqlOrderStore {
    async fn insert_batch(
        &self,
        requests: &[OrderRequest],
        payment_timeout_ms: i64,
    ) -> Result<u64, StoreError> {
        if requests.is_empty() {
            return Ok(0);
        }
        let now = flashsale_storage::now_ms();
        // Any uniqueness conflict (order id or user + idempotency key) means "already have it".
        let (insert, skip_duplicates) = self.db.engine().insert_skipping_duplicates();
        let inserted = with_pool!(&self.db, pool, DB => {
            let mut qb = QueryBuilder::<DB>::new(format!(
                "{insert} orders (id, user_id, sale_id, quantity, price_cents, idempotency_key, status, version, created_at_ms, updated_at_ms, expires_at_ms) ",
            ));
            qb.push_values(requests, |mut b, r| {
                b.push_bind(&r.order_id)
                    .push_bind(r.user_id)
                    .push_bind(r.sale_id)
                    .push_bind(r.quantity)
                    .push_bind(r.price_cents)
                    .push_bind(&r.idempotency_key)
                    .push_bind(OrderStatus::Created.as_str())
                    .push_bind(0_i64)
                    .push_bind(r.accepted_at_ms)
                    .push_bind(now)
                    .push_bind(r.accepted_at_ms.saturating_add(payment_timeout_ms));
            });
            qb.push(skip_duplicates);
            qb.build().execute(pool).await.map(|r| r.rows_affected())
        })?;
        Ok(inserted)
    }

    async fn get(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
        Ok(self
            .select("WHERE id = ?", &[order_id.into()])
            .await?
            .into_iter()
            .next())
    }

    async fn list_for_user(&self, user_id: i64) -> Result<Vec<Order>, StoreError> {
        self.select(
            "WHERE user_id = ? ORDER BY created_at_ms DESC, id LIMIT 1000",
            &[user_id.into()],
        )
        .await
    }

    async fn transition(
        &self,
        order_id: &str,
        from: OrderStatus,
        version: i64,
        to: OrderStatus,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = self
            .db
            .execute(
                "UPDATE orders SET status = ?, version = version + 1, updated_at_ms = ?
                 WHERE id = ? AND status = ? AND version = ?",
                &[
                    to.as_str().into(),
                    now_ms.into(),
                    order_id.into(),
                    from.as_str().into(),
                    version.into(),
                ],
            )
            .await?;
        Ok(done == 1)
    }

    async fn due_for_expiry(&self, now_ms: i64, limit: i64) -> Result<Vec<Order>, StoreError> {
        self.select(
            "WHERE status = 'created' AND expires_at_ms <= ? ORDER BY expires_at_ms LIMIT ?",
            &[now_ms.into(), limit.into()],
        )
        .await
    }

    async fn unreleased(&self, limit: i64) -> Result<Vec<Order>, StoreError> {
        self.select(
            "WHERE status IN ('cancelled', 'expired') AND stock_released = 0 LIMIT ?",
            &[limit.into()],
        )
        .await
    }

    async fn mark_released(&self, order_id: &str) -> Result<(), StoreError> {
        self.db
            .execute(
                "UPDATE orders SET stock_released = 1 WHERE id = ?",
                &[order_id.into()],
            )
            .await?;
        Ok(())
    }
}
