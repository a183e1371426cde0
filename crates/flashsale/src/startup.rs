//! Building the services and running them: `flashsale dev` (everything in one process) and
//! `flashsale serve <service>` (one service per process).
//!
//! Each service assembles itself from its configuration section (see [`crate::assembly`]);
//! [`crate::host`] serves it on its own listener with health, load shedding, `/metrics` and
//! drain. [`DevApp`] composes all four in one process, each on its own loopback port, talking
//! gRPC exactly as separate processes do; [`ServiceApp`] runs one of them. Building is separate
//! from running (bind first, then serve), so tests can bind port 0 and ask for the address.
//!
//! Shutdown drains in order: the gateway stops accepting and finishes in-flight requests, then
//! the gRPC services leave rotation (deregister, `NOT_SERVING`) and stop, then their workers
//! (the order consumer writes what is still queued). Each stage gets [`GRACE`] before it is
//! abandoned (the order journal keeps anything not yet written).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use flashsale_gateway::{buy::in_process::LocalServices, upstream::Upstreams, AppState};
use flashsale_inventory::assemble::Start;
use flashsale_kernel::{Stops, Worker, Workers};
use flashsale_proto::inventory::inventory_client::InventoryClient;
use flashsale_registry::{Balanced, Registrar, RegistryService};
use flashsale_telemetry::span_buffer::SpanBuffer;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::host::GRACE;
use crate::{
    assembly::{self, Shared},
    cli::Service,
    config::Config,
    discovery::listen_address,
    host::{bind, host_grpc, local_addr, local_channel, serve_gateway, GrpcService, HostedGrpc},
};

/// What the process's telemetry hands to the services it runs: the Prometheus rendering (for
/// `/metrics`) and, when spans are kept in memory, the span buffer (for `/debug/traces/{id}`).
#[derive(Debug, Clone)]
pub struct Telemetry {
    /// Renders this process's metrics.
    pub metrics: PrometheusHandle,
    /// Recent spans of this process, when kept.
    pub traces: Option<SpanBuffer>,
}

impl Telemetry {
    /// Telemetry not installed in the process (in-process test apps, several per process):
    /// metrics render empty, no spans kept.
    pub fn detached() -> Self {
        Self {
            metrics: flashsale_telemetry::metrics::detached(),
            traces: None,
        }
    }
}

/// Startup and run failures.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad or missing configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// A port or file could not be opened.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error(transparent)]
    Storage(#[from] flashsale_storage::StorageError),
    /// The auth service could not be assembled.
    #[error("auth: {0}")]
    Auth(#[from] flashsale_auth::assemble::AssembleError),
    /// The inventory could not be assembled.
    #[error("inventory: {0}")]
    Inventory(#[from] flashsale_inventory::assemble::AssembleError),
    /// The order service could not be assembled.
    #[error("order: {0}")]
    Order(#[from] flashsale_order::assemble::AssembleError),
    /// The order side's record of held stock could not be opened (NATS).
    #[error("order queue: {0}")]
    Queue(#[from] flashsale_order::queue::QueueError),
    /// The gateway could not be assembled.
    #[error("gateway: {0}")]
    Gateway(#[from] flashsale_gateway::assemble::AssembleError),
    /// A gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A server task panicked or was cancelled.
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A client of the inventory service at `addr` (`host:port` or a URI); connects on first use.
pub fn inventory_client(addr: &str) -> Result<InventoryClient<Balanced>, StartupError> {
    let channel = Balanced::direct(addr)
        .map_err(|e| StartupError::Config(format!("inventory address: {e}")))?;
    Ok(InventoryClient::new(channel))
}

/// The registry service, ready to host (its watches end when `stops.server` is cancelled).
fn registry_service(config: &Config, stops: &Stops) -> GrpcService {
    let registry = RegistryService::new(
        Duration::from_millis(config.registry.ttl_ms),
        stops.server.clone(),
    );
    let evictor = Worker::adopt("registry.evictor", registry.spawn_evictor());
    GrpcService::new(registry.into_server(), [evictor].into_iter().collect())
}

/// The registration of one instance of `service` at `addr` with the registry `replicas`.
fn register(
    config: &Config,
    replicas: &[String],
    service: Service,
    addr: SocketAddr,
) -> Result<Registrar, StartupError> {
    let instance = flashsale_proto::registry::Instance {
        service: service.name().to_owned(),
        address: addr.to_string(),
        weight: config.discovery.weight.max(1),
        metadata: config.discovery.metadata.clone().into_iter().collect(),
    };
    Registrar::start(
        replicas,
        instance,
        Duration::from_millis(config.discovery.heartbeat_ms),
    )
    .map_err(|e| StartupError::Config(e.to_string()))
}

/// The whole system in one process: gateway, auth, inventory and order, each on its own port.
/// With one instance and no registry the gateway (and the order service's releases) call the
/// services in-process ([`crate::host::local_channel`]); their gRPC ports still serve the CLI and tools.
pub struct DevApp {
    http: TcpListener,
    http_addr: SocketAddr,
    grpc_addrs: Vec<SocketAddr>,
    inventory_addr: SocketAddr,
    gateway: AppState,
    hosted: Vec<HostedGrpc>,
    /// Stops following the in-process registry once everything stopped.
    discovery_shutdown: CancellationToken,
}

impl std::fmt::Debug for DevApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevApp")
            .field("http_addr", &self.http_addr)
            .field("grpc_addrs", &self.grpc_addrs)
            .finish_non_exhaustive()
    }
}

impl DevApp {
    /// Opens the database, binds every port and starts the gRPC services; the gateway starts
    /// serving in [`DevApp::run_until_stopped`]. The gRPC services bind ephemeral loopback ports.
    pub async fn build(config: Config, telemetry: Telemetry) -> Result<Self, StartupError> {
        config.check().map_err(StartupError::Config)?;
        let instances = config.dev.instances.max(1);
        let use_registry = config.dev.registry || instances > 1;
        if instances > 1 && !config.shares_state_between_instances() {
            return Err(StartupError::Config(
                "dev --instances above 1 needs shared state: set inventory.stock = \"redis\" and \
                 auth.sessions = \"redis\""
                    .into(),
            ));
        }
        let http = bind(&config.http_addr.to_string()).await?;
        let http_addr = local_addr(&http)?;
        let shared = Shared::new(config, true, telemetry);
        let config = shared.config();
        let metrics = shared.telemetry().metrics.clone();
        let limit = config.grpc_max_in_flight;
        // One pair of stops for every service of the process: all servers drain before any
        // worker stops (an order consumer outlives every server that may still queue orders).
        let stops = Stops::default();
        let discovery_shutdown = CancellationToken::new();
        let mut hosted = Vec::new();
        let mut grpc_addrs = Vec::new();

        // With a registry, every instance registers with it and every client balances over
        // what it announces, exactly as separate processes would.
        let registry = if use_registry {
            let listener = bind("127.0.0.1:0").await?;
            let addr = local_addr(&listener)?;
            let service = registry_service(config, &stops);
            hosted.push(host_grpc(
                listener,
                service,
                limit,
                metrics.clone(),
                stops.clone(),
            ));
            grpc_addrs.push(addr);
            Some(vec![addr.to_string()])
        } else {
            None
        };
        let client = |service: Service, fixed: &str| -> Result<Balanced, StartupError> {
            match &registry {
                Some(replicas) => {
                    let set = flashsale_registry::Source::Registry(replicas.clone())
                        .resolve(service.name(), &discovery_shutdown)
                        .map_err(|e| StartupError::Config(e.to_string()))?;
                    Ok(Balanced::over(set, &config.discovery.balance))
                }
                None => Balanced::direct(fixed).map_err(|e| StartupError::Config(e.to_string())),
            }
        };

        let mut first = None;
        let mut local = None;
        for _ in 0..instances {
            let (auth_l, inv_l, order_l) = (
                bind("127.0.0.1:0").await?,
                bind("127.0.0.1:0").await?,
                bind("127.0.0.1:0").await?,
            );
            let addrs = [
                local_addr(&auth_l)?,
                local_addr(&inv_l)?,
                local_addr(&order_l)?,
            ];
            let auth = assembly::auth(&shared).await?;
            let inventory = assembly::inventory(&shared, Start::WithGateways, &stops).await?;
            let releases = if registry.is_none() {
                local_channel(inventory.service.clone().into_server())
            } else {
                client(Service::Inventory, &addrs[1].to_string())?
            };
            let order =
                assembly::order(&shared, Arc::new(InventoryClient::new(releases)), &stops).await?;
            // One instance without a registry: the gateway calls the services in this process
            // (the same generated servers, no network); they still serve gRPC for the CLI.
            if registry.is_none() {
                local.get_or_insert_with(|| {
                    Upstreams::new(
                        local_channel(auth.clone().into_server()),
                        local_channel(inventory.service.clone().into_server()),
                        local_channel(order.service.clone().into_server()),
                    )
                    // The buy path calls the two services directly, without a codec.
                    .with_in_process_buy(LocalServices::shared(
                        inventory.service.clone(),
                        order.service.clone(),
                    ))
                });
            }
            let services = [
                (
                    Service::Auth,
                    auth_l,
                    GrpcService::new(auth.into_server(), Workers::new()),
                ),
                (
                    Service::Inventory,
                    inv_l,
                    GrpcService::new(inventory.service.into_server(), inventory.workers),
                ),
                (
                    Service::Order,
                    order_l,
                    GrpcService::new(order.service.into_server(), order.workers),
                ),
            ];
            for ((service, listener, grpc), addr) in services.into_iter().zip(addrs) {
                let registrar = match &registry {
                    Some(replicas) => Some(register(config, replicas, service, addr)?),
                    None => None,
                };
                hosted.push(
                    host_grpc(listener, grpc, limit, metrics.clone(), stops.clone())
                        .registered(registrar),
                );
            }
            first.get_or_insert(addrs.map(|a| a.to_string()));
            grpc_addrs.extend(addrs);
        }
        let [auth_addr, inv_addr, order_addr] = first.unwrap_or_default();
        let inventory_addr = inv_addr
            .parse()
            .map_err(|_| StartupError::Config("no inventory instance".into()))?;
        let upstreams = match local {
            Some(local) => local,
            None => Upstreams::new(
                client(Service::Auth, &auth_addr)?,
                client(Service::Inventory, &inv_addr)?,
                client(Service::Order, &order_addr)?,
            ),
        };
        let gateway = assembly::gateway(&shared, upstreams).await?;
        tracing::info!(%http_addr, instances, registry = use_registry, grpc = ?grpc_addrs, "flashsale dev started");
        Ok(Self {
            http,
            http_addr,
            grpc_addrs,
            inventory_addr,
            gateway,
            hosted,
            discovery_shutdown,
        })
    }

    /// The gateway's HTTP address (with the real port when configured with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The gRPC address of the (first) inventory instance.
    pub fn inventory_addr(&self) -> SocketAddr {
        self.inventory_addr
    }

    /// Serves until `shutdown` is cancelled, then drains: gateway, gRPC servers, workers.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let _stop_discovery = self.discovery_shutdown.drop_guard();
        serve_gateway(self.http, self.gateway, &shutdown).await?;
        HostedGrpc::drain_all(self.hosted).await;
        tracing::info!("flashsale dev stopped");
        Ok(())
    }
}

/// One service running as its own process (`flashsale serve <service>`).
pub struct ServiceApp {
    service: Service,
    addr: SocketAddr,
    running: Running,
    /// Stops following the registry (clients of other services) once the service stopped.
    discovery_shutdown: CancellationToken,
}

enum Running {
    Gateway {
        listener: TcpListener,
        state: AppState,
    },
    Grpc(HostedGrpc),
}

impl std::fmt::Debug for ServiceApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceApp")
            .field("service", &self.service)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ServiceApp {
    /// Binds the service's address and builds it; a gRPC service starts serving at once, the
    /// gateway in [`ServiceApp::run_until_stopped`].
    pub async fn build(
        service: Service,
        config: Config,
        telemetry: Telemetry,
    ) -> Result<Self, StartupError> {
        config.check().map_err(StartupError::Config)?;
        if service == Service::Gateway && config.gateway.insecure_skip_auth {
            return Err(StartupError::Config(
                "gateway.insecure_skip_auth is for benchmarks with `flashsale dev` only".into(),
            ));
        }
        let discovery_shutdown = CancellationToken::new();
        let shared = Shared::new(config, false, telemetry);
        let config = shared.config();
        let s = &config.services;
        let stops = Stops::default();
        let (listener, grpc) = match service {
            Service::Gateway => {
                let upstreams = crate::discovery::upstreams(config, &discovery_shutdown)?;
                let listener = bind(&config.http_addr.to_string()).await?;
                let addr = local_addr(&listener)?;
                let state = assembly::gateway(&shared, upstreams).await?;
                return Ok(Self {
                    service,
                    addr,
                    running: Running::Gateway { listener, state },
                    discovery_shutdown,
                });
            }
            Service::Auth => {
                let listener = bind(&listen_address(&s.auth)).await?;
                let auth = assembly::auth(&shared).await?;
                (
                    listener,
                    GrpcService::new(auth.into_server(), Workers::new()),
                )
            }
            Service::Inventory => {
                let listener = bind(&listen_address(&s.inventory)).await?;
                let inventory = assembly::inventory(&shared, Start::Alone, &stops).await?;
                let grpc = GrpcService::new(inventory.service.into_server(), inventory.workers);
                (listener, grpc)
            }
            Service::Order => {
                let listener = bind(&listen_address(&s.order)).await?;
                let releases = crate::discovery::inventory(config, &discovery_shutdown)?;
                let order = assembly::order(&shared, Arc::new(releases), &stops).await?;
                (
                    listener,
                    GrpcService::new(order.service.into_server(), order.workers),
                )
            }
            Service::Registry => (
                bind(&config.registry.addr).await?,
                registry_service(config, &stops),
            ),
        };
        let addr = local_addr(&listener)?;
        let metrics = shared.telemetry().metrics.clone();
        let hosted = host_grpc(listener, grpc, config.grpc_max_in_flight, metrics, stops);
        let registrar = match service {
            Service::Registry | Service::Gateway => None,
            _ => crate::discovery::announce(config, service, addr)?,
        };
        tracing::info!(?service, %addr, "serving");
        Ok(Self {
            service,
            addr,
            running: Running::Grpc(hosted.registered(registrar)),
            discovery_shutdown,
        })
    }

    /// The address the service listens on (the real port when configured with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled, then drains (out of rotation, server, workers).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let _stop_discovery = self.discovery_shutdown.drop_guard();
        match self.running {
            Running::Gateway { listener, state } => serve_gateway(listener, state, &shutdown).await,
            Running::Grpc(hosted) => {
                hosted.run_until(&shutdown).await?;
                tracing::info!(service = ?self.service, "stopped");
                Ok(())
            }
        }
    }
}
