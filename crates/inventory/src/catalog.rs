//! Sales in the SQL database, and the reservations the database implies.
//!
//! The database is the truth: a sale's remaining stock is its initial stock minus the units held
//! by its live orders and by accepted order requests still in the queue journal. On start the
//! service rebuilds its stock counters from [`Catalog::load_reservations`], so a crash or restart
//! can neither lose a sold unit nor resurrect one.

use async_trait::async_trait;
use flashsale_storage::{with_pool, Database};
use sqlx::QueryBuilder;

use crate::sale::{NewSale, Sale};

/// Storage errors; the cause is logged, never shown to clients.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database failed.
    #[error("catalog storage failed: {0}")]
    Storage(#[from] sqlx::Error),
    /// The order queue holding requests not yet in the database could not be read (a catalog
    /// that also looks at a queue outside the database, such as NATS JetStream).
    #[error("order queue lookup failed: {0}")]
    Queue(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A unit of stock held for an order, as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReservation {
    /// Order id.
    pub order_id: String,
    /// Sale.
    pub sale_id: i64,
    /// Buyer.
    pub user_id: i64,
    /// Units held.
    pub quantity: i64,
    /// True when the order ended unpaid (cancelled/expired) and its stock is back.
    pub released: bool,
}

/// Sales storage.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Stores a new sale and returns it with its id.
    async fn create(&self, sale: &NewSale) -> Result<Sale, CatalogError>;
    /// All sales.
    async fn list(&self) -> Result<Vec<Sale>, CatalogError>;
    /// Every reservation the orders and the queue journal hold.
    async fn load_reservations(&self) -> Result<Vec<StoredReservation>, CatalogError>;
    /// Which of these order ids the database knows (as an order or a queued request).
    async fn known_orders(&self, order_ids: &[String]) -> Result<Vec<String>, CatalogError>;
}

/// Sales in the SQL database (any engine).
#[derive(Debug, Clone)]
pub struct SqlCatalog {
    db: Database,
}

impl SqlCatalog {
    /// A catalog over an open, migrated database.
    pub fn new(db: impl Into<Database>) -> Self {
        Self { db: db.into() }
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
            .await?;
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

    async fn known_orders(&self, order_ids: &[String]) -> Result<Vec<String>, CatalogError> {
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
            })?;
            known.extend(rows.into_iter().map(|(id,)| id));
        }
        Ok(known)
    }
}
