//! The flashsale binary's library: command line, configuration, and the composition of the
//! services into running processes.
//!
//! * [`cli`]: the commands (`dev`, `serve <service>`, `bench`, `inventory reconcile`, `trace`).
//! * [`config`]: typed configuration from defaults, an optional TOML file and `FLASHSALE_*`
//!   environment variables.
//! * [`startup`]: builds each service and serves it on its own port; `dev` runs all four in one
//!   process through the same gRPC code path as separate processes.
//! * [`discovery`]: where clients find the services (static list or registry replicas) and how a
//!   service registers itself.
//! * [`shutdown`]: SIGINT/SIGTERM handling.
//! * [`queued_catalog`]: the inventory's view of the orders when requests queue on NATS.
//! * [`ops`]: operator commands against running services (`inventory reconcile`).
//! * [`traces`]: `flashsale trace <id>`, one request's spans as a tree.

pub mod cli;
pub mod config;
pub mod discovery;
pub mod ops;
pub mod queued_catalog;
pub mod shutdown;
pub mod startup;
pub mod traces;
