//! How this process finds the services it calls, and announces the one it runs.
//!
//! `discovery.source` chooses where clients learn the instances of a service:
//!
//! * `static` (default): the addresses in `services.<name>`. One address gives a plain
//!   channel (exactly one connection, as before any balancing); a comma-separated list gives a
//!   pool balanced over all of them, for a fixed deployment or a Kubernetes headless service.
//! * `registry`: the registry replicas in `discovery.registries`; clients watch every replica
//!   and merge what they see (`flashsale_registry::resolver`), and each gRPC service
//!   registers itself with every replica ([`announce`]).

use std::net::SocketAddr;

use flashsale_gateway::upstream::Upstreams;
use flashsale_proto::{inventory::inventory_client::InventoryClient, registry::Instance};
use flashsale_registry::{Balanced, Registrar, Source};
use tokio_util::sync::CancellationToken;

use crate::{
    cli::Service,
    config::{Config, DiscoverySource},
    startup::StartupError,
};

/// The addresses of a `services.*` entry (comma-separated, blanks ignored).
pub fn addresses(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Where `serve` listens for a `services.*` entry: its first address.
pub fn listen_address(list: &str) -> String {
    addresses(list).into_iter().next().unwrap_or_default()
}

fn config_error(e: impl std::fmt::Display) -> StartupError {
    StartupError::Config(e.to_string())
}

/// A channel to the instances of `service`, whose static addresses are `list`. Resolution
/// stops at `shutdown`.
pub fn channel(
    config: &Config,
    service: Service,
    list: &str,
    shutdown: &CancellationToken,
) -> Result<Balanced, StartupError> {
    let balance = &config.discovery.balance;
    match config.discovery.source {
        DiscoverySource::Static => {
            let addrs = addresses(list);
            match addrs.as_slice() {
                [] => Err(StartupError::Config(format!(
                    "no address configured for {}",
                    service.name()
                ))),
                [one] => Balanced::direct(one).map_err(config_error),
                _ => {
                    let set = Source::Static(addrs)
                        .resolve(service.name(), shutdown)
                        .map_err(config_error)?;
                    Ok(Balanced::over(set, balance))
                }
            }
        }
        DiscoverySource::Registry => {
            let set = Source::Registry(config.discovery.registries.clone())
                .resolve(service.name(), shutdown)
                .map_err(config_error)?;
            Ok(Balanced::over(set, balance))
        }
    }
}

/// The gateway's clients of auth, inventory and order.
pub fn upstreams(config: &Config, shutdown: &CancellationToken) -> Result<Upstreams, StartupError> {
    let s = &config.services;
    Ok(Upstreams::new(
        channel(config, Service::Auth, &s.auth, shutdown)?,
        channel(config, Service::Inventory, &s.inventory, shutdown)?,
        channel(config, Service::Order, &s.order, shutdown)?,
    ))
}

/// A client of the inventory instances (for the order service's releases).
pub fn inventory(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<InventoryClient<Balanced>, StartupError> {
    Ok(InventoryClient::new(channel(
        config,
        Service::Inventory,
        &config.services.inventory,
        shutdown,
    )?))
}

/// With registry discovery, registers this instance of `service` (listening on `bound`) with
/// every registry replica and keeps it registered; `None` with static discovery.
pub fn announce(
    config: &Config,
    service: Service,
    bound: SocketAddr,
) -> Result<Option<Registrar>, StartupError> {
    if config.discovery.source != DiscoverySource::Registry {
        return Ok(None);
    }
    let d = &config.discovery;
    let instance = Instance {
        service: service.name().to_owned(),
        address: d.advertise.clone().unwrap_or_else(|| bound.to_string()),
        weight: d.weight.max(1),
        metadata: d.metadata.clone().into_iter().collect(),
    };
    Registrar::start(
        &d.registries,
        instance,
        std::time::Duration::from_millis(d.heartbeat_ms),
    )
    .map(Some)
    .map_err(config_error)
}
