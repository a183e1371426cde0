//! The command line.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// flashsale: a flash-sale (seckill) backend that never oversells.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Configuration file (TOML); `FLASHSALE_*` environment variables override it.
    #[arg(long, global = true, env = "FLASHSALE_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole system in one process on embedded backends (no servers needed).
    Dev(DevArgs),
    /// Run one service as its own process.
    Serve(ServeArgs),
    /// Rush a sale, read it (`read`) or hold its live stream (`sse`: memory per subscriber,
    /// fan-out), check the guarantees, and report throughput, latency and server CPU per request
    /// as a multiple of a bare HTTP server's (`ceiling`, `--with-ceiling`).
    Bench(Box<flashsale_bench::BenchArgs>),
    /// Operate the inventory service of a running system.
    Inventory(InventoryArgs),
    /// Show the spans of one recent request as a tree (from `flashsale dev`'s span buffer;
    /// the trace id is in every response's `traceparent` header and every error body).
    Trace(TraceArgs),
}

/// Options of `flashsale trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The trace id: 32 lowercase hex digits.
    pub trace_id: String,
    /// Base URL of the gateway [default: `http://` + `http_addr` from the configuration].
    #[arg(long, value_name = "URL")]
    pub gateway: Option<String>,
}

/// Options of `flashsale inventory`.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: InventoryCommand,
}

/// Inventory operations.
#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Compare the stock backend (remaining, holds, per-user counts) with the database (orders
    /// and queued order requests) and repair drift, reporting what changed per sale. Safe
    /// during a rush. Exit code 2 when drift was found in a dry run, or conflicts were left.
    Reconcile(ReconcileArgs),
}

/// Options of `flashsale inventory reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Only this sale [default: every sale].
    #[arg(long = "sale", value_name = "ID")]
    pub sale: Option<i64>,
    /// Report what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// gRPC address of the inventory service [default: `services.inventory` from the
    /// configuration].
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: Option<String>,
}

/// Options of `flashsale dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// HTTP address of the gateway [default: 127.0.0.1:8080, or `http_addr` from the
    /// configuration].
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Directory for the database and the signing key [default: ./flashsale-data, or
    /// `data_dir` from the configuration].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Instances of each gRPC service, behind an in-process registry [default: 1]. Above 1
    /// needs `inventory.stock = "redis"` and `auth.sessions = "redis"`.
    #[arg(long, value_name = "N")]
    pub instances: Option<usize>,
    /// Put the services behind the in-process registry even with one instance.
    #[arg(long)]
    pub registry: bool,
}

/// Options of `flashsale serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The service to run.
    pub service: Service,
}

/// A service of the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Service {
    /// HTTP/JSON gateway.
    Gateway,
    /// Users, login, sessions.
    Auth,
    /// Sales and stock.
    Inventory,
    /// Order queue and orders.
    Order,
    /// Service registry (instances register; clients watch).
    Registry,
}

impl Service {
    /// The name instances register under.
    pub fn name(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Auth => "auth",
            Service::Inventory => "inventory",
            Service::Order => "order",
            Service::Registry => "registry",
        }
    }
}
