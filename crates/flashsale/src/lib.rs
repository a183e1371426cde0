//! The flashsale binary's library: command line, configuration, and the composition of the
//! services into running processes.
//!
//! * [`cli`]: the commands (`dev`, `serve <service>`, `bench`, `inventory reconcile`, `trace`).
//! * [`config`]: typed configuration from defaults, an optional TOML file and `FLASHSALE_*`
//!   environment variables.
//! * [`assembly`]: the parts a process shares (database, Redis, token keys), opened on first
//!   use, and each service assembled from its configuration section and those parts.
//! * [`host`]: serves an assembled service (listener, health, shedding, `/metrics`, drain).
//! * [`startup`]: `dev` runs all four services in one process through the same gRPC code path
//!   as separate processes; `serve` runs one.
//! * [`discovery`]: where clients find the services (static list or registry replicas) and how a
//!   service registers itself.
//! * [`shutdown`]: SIGINT/SIGTERM handling.
//! * [`ops`]: operator commands against running services (`inventory reconcile`).
//! * [`traces`]: `flashsale trace <id>`, one request's spans as a tree.

pub mod assembly;
pub mod cli;
pub mod config;
pub mod discovery;
pub mod host;
pub mod ops;
pub mod shutdown;
pub mod startup;
pub mod traces;
