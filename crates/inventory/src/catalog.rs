//! Sales in the SQL database, and the reservations the order side records.
//!
//! The database is the truth: a sale's remaining stock is its initial stock minus the units held
//! by its live orders and by accepted order requests still queued. On start the service rebuilds
//! its stock counters from [`Catalog::load_reservations`], so a crash or restart can neither lose
//! a sold unit nor resurrect one.
//!
//! The `sales` table is the inventory's own; the orders are not. [`SqlCatalog`] answers the
//! questions about orders through the [`HeldStock`] port, which the order service implements
//! for its queue engine (journal or NATS) — the inventory reads none of its tables.

use std::sync::Arc;

use async_trait::async_trait;
pub use flashsale_kernel::held_stock::{HeldStock, HeldStockError, StoredReservation};
use flashsale_storage::Database;

use crate::sale::{NewSale, Sale};

/// Storage errors; the cause is logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database failed.
    #[error("catalog storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    /// The order side could not say which orders hold stock.
    #[error(transparent)]
    Orders(#[from] HeldStockError),
}

/// Sales storage.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Stores a new sale and returns it with its id.
    async fn create(&self, sale: &NewSale) -> Result<Sale, CatalogError>;
    /// All sales.
    async fn list(&self) -> Result<Vec<Sale>, CatalogError>;
    /// Every reservation the accepted orders hold (written or still queued).
    async fn load_reservations(&self) -> Result<Vec<StoredReservation>, CatalogError>;
    /// Which of these order ids the order side knows (as an order or a queued request).
    async fn known_orders(&self, order_ids: &[String]) -> Result<Vec<String>, CatalogError>;
}

/// Sales in the SQL database (any engine); orders through the order side's [`HeldStock`].
#[derive(Debug, Clone)]
pub struct SqlCatalog {
    db: Database,
    orders: Arc<dyn HeldStock>,
}

impl SqlCatalog {
    /// A catalog over an open, migrated database, asking `orders` about held stock.
    pub fn new(db: impl Into<Database>, orders: Arc<dyn HeldStock>) -> Self {
        Self {
            db: db.into(),
            orders,
        }
    }
}

const INSERT_SALE: &str = "INSERT INTO sales (name, price_cents, stock, per_user_limit, starts_at_ms, ends_at_ms, created_at_ms)
     VALUES (?, ?, ?, ?, ?, ?, ?)";

type SaleRow = (i64, String, i64, i64, i64, i64, i64);

fn sale_from_row(r: SaleRow) -> Sale {
    Sale {
        id: r.0,
        name: r.1,
        price_cents: r.2,
        stock: r.3,
        per_user_limit: r.4,
        starts_at_ms: r.5,
        ends_at_ms: r.6,
    }
}

#[async_trait]
impl Catalog for SqlCatalog {
    async fn create(&self, sale: &NewSale) -> Result<Sale, CatalogError> {
        let name = sale.name.trim();
        let args = [
            name.into(),
            sale.price_cents.into(),
            sale.stock.into(),
            sale.per_user_limit.into(),
            sale.starts_at_ms.into(),
            sale.ends_at_ms.into(),
            flashsale_storage::now_ms().into(),
        ];
        let id = self.db.insert_returning_id(INSERT_SALE, &args).await?;
        Ok(Sale {
            id,
            name: name.to_owned(),
            price_cents: sale.price_cents,
            stock: sale.stock,
            per_user_limit: sale.per_user_limit,
            starts_at_ms: sale.starts_at_ms,
            ends_at_ms: sale.ends_at_ms,
        })
    }

    async fn list(&self) -> Result<Vec<Sale>, CatalogError> {
        let rows: Vec<SaleRow> = self
            .db
            .fetch_all(
                "SELECT id, name, price_cents, stock, per_user_limit, starts_at_ms, ends_at_ms FROM sales ORDER BY id",
                &[],
            )
            .await?;
        Ok(rows.into_iter().map(sale_from_row).collect())
    }

    async fn load_reservations(&self) -> Result<Vec<StoredReservation>, CatalogError> {
        Ok(self.orders.reservations().await?)
    }

    async fn known_orders(&self, order_ids: &[String]) -> Result<Vec<String>, CatalogError> {
        Ok(self.orders.known(order_ids).await?)
    }
}
