//! The order service (article chapter 4.2): accepted buys become orders, exactly once.
//!
//! The buy path never waits for more than one durable write. By default (the direct intake,
//! [`queue::direct`]) an accepted order request is written straight into the [`store`] as a
//! `created` order by group commit: the gateway answers `202` only after the commit, and
//! thousands of buys share one transaction. With a [`queue`] engine instead (the `order_queue`
//! journal, NATS JetStream) it is appended to the queue durably and the [`consumer`] writes
//! requests to the store in batches, acknowledging them only after the commit. A crash anywhere
//! replays the queue; duplicate deliveries are absorbed by the order id primary key and the
//! unique `(user_id, idempotency_key)`.
//!
//! Orders then follow a state machine ([`model::OrderStatus`]): `pending` (queued) → `created`
//! (unpaid) → `paid` | `cancelled` | `expired`, each step an optimistic-locking update on the
//! order's `version`. Cancelled and expired orders give their stock back through the
//! [`release::StockReleaser`] exactly once; [`expiry`] expires unpaid orders and retries releases
//! that failed.
//!
//! [`assemble`] builds the service from its configuration section; [`held`] tells the
//! inventory, for each queue engine, which accepted orders hold stock.

pub mod assemble;
pub mod config;
pub mod consumer;
pub mod expiry;
pub mod held;
pub mod model;
pub mod queue;
pub mod release;
pub mod schema;
pub mod service;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::OrderConfig;
pub use schema::schema;
pub use service::OrderService;
