//! The inventory service (article chapter 4.3): sales and their stock.
//!
//! The one rule it exists for: **never sell more than the stock**. A buy is decided by
//! [`stock::StockStore::reserve`], which checks the sale window, the stock and the buyer's
//! per-sale limit and, only if all pass, decrements and records the reservation under its order
//! id — one atomic step, so two buyers can never both take the last item, and a retried request
//! (same order id) never takes stock twice. [`stock::StockStore::release`] gives a reservation
//! back exactly once.
//!
//! * [`sale`]: the sale model and its validation.
//! * [`catalog`]: sales in the SQL database (the truth) and the rebuild of the stock counters
//!   from the orders recorded there.
//! * [`stock`]: the fast-path trait and its implementations, in process or in Redis (shared by
//!   every inventory instance; one Lua script per decision).
//! * [`drift`]: compares the stock backend with the database and repairs drift
//!   (`flashsale inventory reconcile`).
//! * [`reconcile`]: gives back stock held by buys whose order never reached the queue.
//! * [`recovery`]: rebuilds a sale whose stock the shared backend lost, and learns sales created
//!   by other instances.
//! * [`sales_feed`]: every sale with its remaining stock, pushed to the gateways
//!   (`WatchSales`).
//! * [`service`]: the gRPC server.
//! * [`assemble`]: the service built from its configuration section, with its workers.

pub mod assemble;
pub mod catalog;
pub mod config;
pub mod drift;
pub mod reconcile;
pub mod recovery;
pub mod sale;
pub mod sales_feed;
pub mod schema;
pub mod service;
pub mod stock;

pub use config::InventoryConfig;
pub use schema::schema;
pub use service::InventoryService;
