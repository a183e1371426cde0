//! The system as separate processes and through failures: the real `flashsale` binary spawned,
//! stopped and killed. One test binary, one module per scenario.
//!
//! * [`services`]: the services as separate processes (`flashsale serve <service>`) serve the
//!   same API as `flashsale dev` and stop cleanly on SIGTERM; several gateways and auth
//!   instances share limits and sessions through Redis, two inventories share the stock;
//! * [`registry`]: three instances of every service behind the registry; a served instance's
//!   health, registration and deregistration;
//! * [`failover`]: an inventory process SIGKILLed mid-rush behind `serve registry`;
//! * [`crash`]: `flashsale dev` SIGKILLed mid-rush and restarted — no accepted order lost, on
//!   every engine and queue;
//! * [`stock_loss`]: the stock in Redis lost mid-rush — the sale pauses, is rebuilt, never
//!   oversells;
//! * [`reconcile`]: `flashsale inventory reconcile` against a running inventory.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod failover;
mod reconcile;
mod registry;
mod services;
mod stock_loss;
