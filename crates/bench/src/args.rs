//! Command-line options of `flashsale bench`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::cpus::CpuSet;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Many users, small stock: the sold-out path dominates.
    #[default]
    Rush,
    /// Stock for every attempt: each one is accepted and persisted.
    Accept,
    /// Stock for half the demand: accepts and sold-out answers mixed.
    Mixed,
    /// Many readers `GET /api/v1/sales/{id}` of the prepared sale (public: nobody logs in).
    Read,
    /// Idle subscribers to the sale's live stream (`GET /api/v1/sales/{id}/events`,
    /// `--connections` of them, 10,000 by default): the server memory each costs, then the
    /// fan-out of `--changes` buys, each seen by every subscriber before the next (time until
    /// the last saw it, server CPU per event delivered).
    Sse,
    /// A bare HTTP server in a process of its own: the machine's ceiling for the same client,
    /// and what a bare answer costs a server.
    Ceiling,
    /// No HTTP: orders/s persisted by single-row inserts, by batch inserts and (with
    /// `--nats-url`) from the NATS queue through the consumer, on `--database-url`.
    Persist,
    /// Internal: the ceiling's bare server itself, which the bench runs as a child process
    /// (prints its address, serves until its stdin closes).
    #[value(name = "ceiling-server", hide = true)]
    #[serde(rename = "ceiling-server")]
    CeilingServer,
}

impl Scenario {
    /// Whether the load is buys (`POST …/orders`).
    pub fn buys(self) -> bool {
        matches!(self, Self::Rush | Self::Accept | Self::Mixed)
    }
}

/// Options of `flashsale bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The scenario to run.
    #[arg(value_enum, default_value_t = Scenario::Rush)]
    pub scenario: Scenario,
    /// Base URL of a running gateway, e.g. `http://127.0.0.1:8080`.
    #[arg(long, conflicts_with = "spawn")]
    pub url: Option<String>,
    /// Start `flashsale dev` on a temporary data dir and bench it.
    #[arg(long)]
    pub spawn: bool,
    /// Number of simulated users (registered and logged in before the load; for `read`, the
    /// distinct `X-Forwarded-For` addresses the readers take turns with, nobody logs in; `sse`
    /// prepares one buyer per `--changes` instead).
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Stock of the sale [default: rush 1000; accept users × limit; mixed half of that].
    #[arg(long)]
    pub stock: Option<u64>,
    /// Per-user limit of the sale.
    #[arg(long, default_value_t = 1)]
    pub limit: u32,
    /// Concurrent keep-alive connections [default: 256]; for `sse`, the subscribers to the
    /// live stream [default: 10000] (its `--with-ceiling` uses 256).
    #[arg(long)]
    pub connections: Option<usize>,
    /// `sse`: stock changes the subscribers must see, one buy each (by as many prepared users),
    /// the next only once every subscriber saw the last.
    #[arg(long, default_value_t = 10)]
    pub changes: usize,
    /// Longest duration of the load, in seconds (it stops earlier once settled).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Open loop at this many requests per second (latency from the intended send time);
    /// without it, closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Measure the ceiling first (a bare server in a process of its own) and report throughput
    /// and server CPU per request as ratios to it.
    #[arg(long)]
    pub with_ceiling: bool,
    /// Run the spawned server and the ceiling server on these CPUs only (a CPU list: `0`,
    /// `0-1`, `2,3`), with `taskset`, and the bench's own threads on the others. With `--url`
    /// only the bench and the ceiling server are pinned: pin the server yourself.
    #[arg(long, value_name = "LIST")]
    pub server_cpus: Option<CpuSet>,
    /// With `--url`: a process of the system under test whose CPU is counted in the server
    /// CPU per request; repeat it for each (`--server-pid 41 --server-pid 42`).
    #[arg(long = "server-pid", value_name = "PID", conflicts_with = "spawn")]
    pub server_pids: Vec<u32>,
    /// With --spawn: run the same load again on a second server whose gateway does not
    /// authenticate customers, and report what authentication costs.
    #[arg(long, requires = "spawn")]
    pub compare_auth_off: bool,
    /// Admin email for `--url` (creates the sale).
    #[arg(long, env = "FLASHSALE_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Admin password for `--url`.
    #[arg(long, env = "FLASHSALE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Database of the gateway given with `--url`, for the guarantee check (with `--spawn` it is
    /// the spawned server's): `sqlite://PATH`, `postgres://…` or `mysql://…` / `mariadb://…`.
    #[arg(long)]
    pub database_url: Option<String>,
    /// A Redis the system under test uses (`redis://host:port`): its CPU over the load is
    /// reported per accepted buy (`INFO cpu`; anything else using that Redis is counted too),
    /// and with `--spawn` the keys the spawned server wrote there are deleted afterwards.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// `persist`: orders in the batched and the NATS phases (the single-row phase writes a
    /// tenth of them, at most 10,000).
    #[arg(long, default_value_t = 100_000)]
    pub orders: usize,
    /// `persist`: rows per batch insert (and per consumer batch).
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// `persist`: NATS server for the queued phase (a stream of the run's own, deleted after).
    #[arg(long)]
    pub nats_url: Option<String>,
}

/// Connections of a load when `--connections` is not given.
pub const DEFAULT_CONNECTIONS: usize = 256;
/// Subscribers of `sse` when `--connections` is not given.
pub const DEFAULT_SUBSCRIBERS: usize = 10_000;

impl BenchArgs {
    /// Connections of the load (and of the ceiling): `--connections`, or 256; for `sse`, whose
    /// `--connections` are its subscribers, always 256 (its ceiling).
    pub fn load_connections(&self) -> usize {
        match (self.scenario, self.connections) {
            (Scenario::Sse, _) | (_, None) => DEFAULT_CONNECTIONS,
            (_, Some(n)) => n,
        }
    }

    /// `sse`: the subscribers to the live stream.
    pub fn subscribers(&self) -> usize {
        self.connections.unwrap_or(DEFAULT_SUBSCRIBERS)
    }

    /// Units all users together want: users × limit.
    pub fn demand(&self) -> u64 {
        self.users as u64 * u64::from(self.limit)
    }

    /// The stock of the sale for this scenario.
    pub fn stock(&self) -> u64 {
        self.stock.unwrap_or(match self.scenario {
            Scenario::Rush
            | Scenario::Read
            | Scenario::Sse
            | Scenario::Ceiling
            | Scenario::Persist
            | Scenario::CeilingServer => 1000,
            Scenario::Accept => self.demand(),
            Scenario::Mixed => self.demand().div_ceil(2),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn the_new_options_parse() {
        let a = parse(&["read", "--spawn", "--server-cpus", "0-1,3"]).unwrap();
        assert_eq!(a.scenario, Scenario::Read);
        assert_eq!(a.server_cpus.unwrap().to_string(), "0-1,3");
        let a = parse(&[
            "rush",
            "--url",
            "http://x",
            "--server-pid",
            "7",
            "--server-pid",
            "9",
        ])
        .unwrap();
        assert_eq!(a.server_pids, vec![7, 9]);
        assert!(parse(&["rush", "--spawn", "--server-pid", "7"]).is_err());
        let e = parse(&["rush", "--server-cpus", "1-0"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("runs backwards"), "{e}");
    }

    #[test]
    fn the_ceiling_server_is_hidden_but_runs() {
        assert_eq!(
            parse(&[crate::ceiling::SERVER_SCENARIO]).unwrap().scenario,
            Scenario::CeilingServer
        );
        let possible: Vec<String> = Scenario::value_variants()
            .iter()
            .filter_map(|s| s.to_possible_value())
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_owned())
            .collect();
        assert_eq!(
            possible,
            ["rush", "accept", "mixed", "read", "sse", "ceiling", "persist"]
        );
    }

    #[test]
    fn sse_counts_its_connections_as_subscribers() {
        let a = parse(&["sse", "--spawn"]).unwrap();
        assert_eq!((a.subscribers(), a.load_connections()), (10_000, 256));
        assert_eq!(a.changes, 10);
        let a = parse(&["sse", "--spawn", "--connections", "50", "--changes", "3"]).unwrap();
        assert_eq!(
            (a.subscribers(), a.load_connections(), a.changes),
            (50, 256, 3)
        );
        let a = parse(&["read", "--spawn", "--connections", "8"]).unwrap();
        assert_eq!(a.load_connections(), 8);
        assert_eq!(parse(&["read"]).unwrap().load_connections(), 256);
    }
}
