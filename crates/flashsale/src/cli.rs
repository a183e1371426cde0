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
    /// Rush a sale (or a bare HTTP server: `ceiling`), report throughput and latency, and check
    /// the guarantees.
    Bench(flashsale_bench::BenchArgs),
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
}
