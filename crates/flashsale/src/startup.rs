//! Building the services and running them.
//!
//! Each service is built from configuration (its storage backends chosen there) and served on
//! its own listener. [`DevApp`] composes all four in one process, each on its own loopback port,
//! talking gRPC exactly as separate processes do; [`serve`] runs one of them. Building is
//! separate from running (bind first, then serve), so tests can bind port 0 and ask for the
//! address.
//!
//! Every gRPC server also serves `grpc.health.v1` (tonic-health) and sheds load: past
//! `grpc_max_in_flight` requests at once, it answers `RESOURCE_EXHAUSTED` at once instead of
//! queueing (tower `ConcurrencyLimit` + `LoadShed`).
//!
//! Shutdown drains in order: the gateway stops accepting and finishes in-flight requests, then
//! the gRPC servers stop, then the order consumer writes what is still queued. Each stage gets
//! [`GRACE`] before it is abandoned (the order journal keeps anything not yet written). A
//! `serve`d gRPC service first deregisters from the registry and reports `NOT_SERVING`, so
//! clients stop picking it, then drains.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use flashsale_auth::{
    config::SessionBackend,
    store::{MemorySessionStore, RedisSessionStore, SessionStore, SqlUserStore},
    token::{RetiredKey, SigningKey, TokenKeys},
    AuthService,
};
use flashsale_gateway::config::LimitsBackend;
use flashsale_gateway::{upstream::Upstreams, AppState};
use flashsale_inventory::{
    catalog::{Catalog, SqlCatalog},
    config::StockBackend,
    stock::{MemoryStock, RedisStock, StockStore},
    InventoryService,
};
use flashsale_limits::{Limiter, MemoryLimiter, RedisLimiter};
use flashsale_order::{
    config::QueueBackend,
    queue::{
        nats::{NatsQueue, NatsStream},
        JournalQueue, OrderQueue,
    },
    release::StockReleaser,
    store::{OrderStore, SqlOrderStore},
    OrderService,
};
use flashsale_proto::inventory::inventory_client::InventoryClient;
use flashsale_redis::Redis;
use flashsale_registry::{Balanced, Registrar, RegistryService};
use flashsale_storage::{Database, Durability};
use flashsale_telemetry::span_buffer::SpanBuffer;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::{server::TcpIncoming, Server};
use tonic_health::server::HealthReporter;
use tower::{limit::GlobalConcurrencyLimitLayer, load_shed::LoadShedLayer};
use tower_http::trace::TraceLayer;

use crate::{
    cli::Service, config::Config, discovery::listen_address, queued_catalog::QueuedCatalog,
};

/// How long each shutdown stage may take before it is abandoned.
pub const GRACE: Duration = Duration::from_secs(10);

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

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
    /// Redis could not be reached.
    #[error(transparent)]
    Redis(#[from] flashsale_redis::ConnectError),
    /// The database could not be opened.
    #[error(transparent)]
    Storage(#[from] flashsale_storage::StorageError),
    /// The auth service could not start.
    #[error(transparent)]
    Auth(#[from] flashsale_auth::service::AuthError),
    /// The inventory could not load its sales.
    #[error(transparent)]
    Inventory(#[from] flashsale_inventory::service::OpenError),
    /// The order queue could not open.
    #[error(transparent)]
    Queue(#[from] flashsale_order::queue::QueueError),
    /// A gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A server task panicked or was cancelled.
    #[error("server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartupError {
    let context = context.into();
    move |source| StartupError::Io { context, source }
}

async fn bind(addr: &str) -> Result<TcpListener, StartupError> {
    TcpListener::bind(addr)
        .await
        .map_err(io(format!("cannot listen on {addr}")))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartupError> {
    listener
        .local_addr()
        .map_err(io("cannot read the bound address"))
}

async fn open_database(config: &Config) -> Result<Database, StartupError> {
    let url = config.database_url();
    if config.database_url.is_none() {
        tokio::fs::create_dir_all(&config.data_dir)
            .await
            .map_err(io(format!("cannot create {}", config.data_dir.display())))?;
    }
    let durability = match config.durability {
        crate::config::Durability::Process => Durability::Process,
        crate::config::Durability::Power => Durability::Power,
    };
    Ok(flashsale_storage::connect(&url, durability, 8).await?)
}

/// The token keys from configuration; in `dev` without a configured secret, a random secret
/// kept in the data directory (so tokens survive a restart).
async fn token_keys(config: &Config, dev: bool) -> Result<TokenKeys, StartupError> {
    let secret = match (&config.jwt_secret, dev) {
        (Some(secret), _) => secret.clone(),
        (None, true) => dev_secret(&config.data_dir).await?,
        (None, false) => {
            return Err(StartupError::Config(
                "set FLASHSALE_JWT_SECRET (at least 32 bytes) for the token signing key".into(),
            ))
        }
    };
    let retired = config
        .jwt_retired_keys
        .iter()
        .map(|k| RetiredKey {
            kid: k.kid.clone(),
            secret: k.secret.as_bytes().to_vec(),
            retired_at: k.retired_at,
        })
        .collect();
    TokenKeys::new(
        SigningKey {
            kid: config.jwt_kid.clone(),
            secret: secret.into_bytes(),
        },
        retired,
        &config.auth.issuer,
        &config.auth.audience,
        i64::try_from(config.auth.token_ttl_secs).unwrap_or(i64::MAX),
    )
    .map_err(|e| StartupError::Config(format!("token keys: {e}")))
}

/// One Redis connection for every backend of this process that is configured to use Redis;
/// `None` when none is.
async fn redis_if_needed(config: &Config, uses: bool) -> Result<Option<Redis>, StartupError> {
    if !uses {
        return Ok(None);
    }
    let redis = Redis::connect(&config.redis).await?;
    for warning in redis.durability_warnings().await {
        tracing::error!(%warning, "Redis configuration unsafe for stock and sessions");
    }
    Ok(Some(redis))
}

/// The gateway's rate limiter backend.
fn limiter(config: &Config, redis: Option<&Redis>) -> Result<Limiter, StartupError> {
    match (config.gateway.limits.backend, redis) {
        (LimitsBackend::Memory, _) => Ok(MemoryLimiter::new().into()),
        (LimitsBackend::Redis, Some(redis)) => {
            Ok(RedisLimiter::new(redis.clone(), config.gateway.limits.batch).into())
        }
        (LimitsBackend::Redis, None) => Err(StartupError::Config(
            "gateway.limits.backend = redis needs a Redis connection".into(),
        )),
    }
}

/// The gateway's state: its limiter backend, and stock events when it follows them.
fn gateway_state(
    config: &Config,
    keys: TokenKeys,
    upstreams: Upstreams,
    redis: Option<&Redis>,
    telemetry: Telemetry,
) -> Result<AppState, StartupError> {
    Ok(AppState::new(
        config.gateway.clone(),
        keys,
        upstreams,
        limiter(config, redis)?,
        config
            .gateway
            .follow_stock_events
            .then(|| config.redis.clone()),
        telemetry.metrics,
        telemetry.traces,
    ))
}

/// Whether the gateway needs Redis.
fn gateway_uses_redis(config: &Config) -> bool {
    config.gateway.limits.backend == LimitsBackend::Redis
}

/// Whether the auth service needs Redis.
fn auth_uses_redis(config: &Config) -> bool {
    config.auth.sessions == SessionBackend::Redis
}

/// Whether the inventory service needs Redis.
fn inventory_uses_redis(config: &Config) -> bool {
    config.inventory.stock == StockBackend::Redis
}

async fn dev_secret(data_dir: &Path) -> Result<String, StartupError> {
    let path = data_dir.join("jwt-secret");
    match tokio::fs::read_to_string(&path).await {
        Ok(secret) => Ok(secret.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tokio::fs::create_dir_all(data_dir)
                .await
                .map_err(io(format!("cannot create {}", data_dir.display())))?;
            let secret = hex::encode(rand::random::<[u8; 32]>());
            tokio::fs::write(&path, &secret)
                .await
                .map_err(io(format!("cannot write {}", path.display())))?;
            Ok(secret)
        }
        Err(e) => Err(io(format!("cannot read {}", path.display()))(e)),
    }
}

async fn build_auth(
    config: &Config,
    db: Database,
    keys: TokenKeys,
    redis: Option<&Redis>,
) -> Result<AuthService, StartupError> {
    let sessions: Arc<dyn SessionStore> = match (config.auth.sessions, redis) {
        (SessionBackend::Memory, _) => Arc::new(MemorySessionStore::default()),
        (SessionBackend::Redis, Some(redis)) => Arc::new(RedisSessionStore::new(redis.clone())),
        (SessionBackend::Redis, None) => {
            return Err(StartupError::Config(
                "auth.sessions = redis needs a Redis connection".into(),
            ))
        }
    };
    let service = AuthService::new(
        &config.auth,
        Arc::new(SqlUserStore::new(db)),
        sessions,
        keys,
    )?;
    if let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) {
        let id = service.ensure_admin(email, password).await?;
        tracing::info!(user_id = id, "admin account ready");
    }
    Ok(service)
}

/// The inventory service and its background workers (reconciler; with shared stock, the
/// catalog refresh). `restarts_alone`: the gateways may have kept running (`serve`), so sales
/// whose stock is not tracked yet are rebuilt only after the grace period.
async fn build_inventory(
    config: &Config,
    db: Database,
    workers_shutdown: &CancellationToken,
    redis: Option<&Redis>,
    restarts_alone: bool,
) -> Result<(InventoryService, Vec<JoinHandle<()>>), StartupError> {
    let stock: Arc<dyn StockStore> = match (config.inventory.stock, redis) {
        (StockBackend::Memory, _) => Arc::new(MemoryStock::new()),
        (StockBackend::Redis, Some(redis)) => Arc::new(RedisStock::new(redis.clone())),
        (StockBackend::Redis, None) => {
            return Err(StartupError::Config(
                "inventory.stock = redis needs a Redis connection".into(),
            ))
        }
    };
    let catalog: Arc<dyn Catalog> = match config.order.queue {
        QueueBackend::Journal => Arc::new(SqlCatalog::new(db)),
        // Requests not persisted yet are in the NATS stream, not in `order_queue`.
        QueueBackend::Nats => Arc::new(QueuedCatalog::new(
            SqlCatalog::new(db),
            NatsStream::connect(&config.order.nats).await?,
        )),
    };
    let grace = Duration::from_millis(config.inventory.reservation_grace_ms);
    let service = if restarts_alone {
        InventoryService::open_paused(catalog, stock, grace).await?
    } else {
        InventoryService::open(catalog, stock)
            .await?
            .with_rebuild_delay(grace)
    };
    let mut workers = vec![service.spawn_reconciler(&config.inventory, workers_shutdown.clone())];
    if config.inventory.stock == StockBackend::Redis {
        workers.push(service.spawn_catalog_refresh(
            Duration::from_millis(config.inventory.catalog_refresh_ms.max(10)),
            workers_shutdown.clone(),
        ));
    }
    Ok((service, workers))
}

/// A client of the inventory service at `addr` (`host:port` or a URI); connects on first use.
pub fn inventory_client(addr: &str) -> Result<InventoryClient<Balanced>, StartupError> {
    let channel = Balanced::direct(addr)
        .map_err(|e| StartupError::Config(format!("inventory address: {e}")))?;
    Ok(InventoryClient::new(channel))
}

/// The order service and its background workers (consumer, expiry sweeper); `inventory`
/// receives its stock releases.
async fn build_order(
    config: &Config,
    db: Database,
    inventory: InventoryClient<Balanced>,
    workers_shutdown: &CancellationToken,
) -> Result<(OrderService, Vec<JoinHandle<()>>), StartupError> {
    let max_age_ms = i64::try_from(config.order.max_accept_age_ms).unwrap_or(i64::MAX);
    let queue: Arc<dyn OrderQueue> = match config.order.queue {
        QueueBackend::Journal => {
            JournalQueue::open(db.clone(), config.order.journal_batch_max, max_age_ms).await?
        }
        QueueBackend::Nats => {
            NatsQueue::open(&config.order.nats, config.order.batch_max, max_age_ms).await?
        }
    };
    let store: Arc<dyn OrderStore> = Arc::new(SqlOrderStore::new(db));
    let releaser: Arc<dyn StockReleaser> = Arc::new(inventory);
    let timeout_ms =
        i64::try_from(config.order.payment_timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let workers = vec![
        tokio::spawn(flashsale_order::consumer::run(
            Arc::clone(&queue),
            Arc::clone(&store),
            config.order.batch_max,
            timeout_ms,
            workers_shutdown.clone(),
        )),
        tokio::spawn(flashsale_order::expiry::run(
            Arc::clone(&store),
            Arc::clone(&releaser),
            Duration::from_millis(config.order.expiry_interval_ms.max(10)),
            workers_shutdown.clone(),
        )),
    ];
    Ok((OrderService::new(queue, store, releaser), workers))
}

/// A running gRPC server: its task and its health.
type Grpc = (JoinHandle<Result<(), tonic::transport::Error>>, Health);

/// What a gRPC server reports on `grpc.health.v1`.
struct Health {
    reporter: HealthReporter,
    /// Full name of the service it serves (`flashsale.inventory.v1.Inventory`).
    service: &'static str,
}

/// Serves one gRPC service on `listener`, with `grpc.health.v1` reporting it `SERVING`, load
/// shedding past `max_in_flight` requests, every request counted and timed per method, and
/// `GET /metrics` (Prometheus, HTTP/1.1) on the same port, until `shutdown` is cancelled.
fn spawn_grpc<S>(
    listener: TcpListener,
    service: S,
    max_in_flight: usize,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> Grpc
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    let serving = reporter.clone();
    let routes = tonic::service::Routes::new(health)
        .add_service(service)
        .into_axum_router()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let body = metrics.render();
                async move { ([(http::header::CONTENT_TYPE, PROMETHEUS_TEXT)], body) }
            }),
        );
    let task = tokio::spawn(async move {
        serving.set_serving::<S>().await;
        Server::builder()
            .tcp_nodelay(true)
            // Prometheus scrapes /metrics over HTTP/1.1; gRPC clients speak HTTP/2.
            .accept_http1(true)
            .layer(TraceLayer::new_for_grpc().make_span_with(flashsale_telemetry::span::make_span))
            // Outside the shedding, so refused requests are counted too.
            .layer(flashsale_telemetry::grpc_metrics::GrpcMetricsLayer)
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::new(max_in_flight.max(1)))
            .add_routes(routes.into())
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown.cancelled_owned())
            .await
    });
    let health = Health {
        reporter,
        service: S::NAME,
    };
    (task, health)
}

/// Takes an instance out of rotation before it drains: deregisters it from the registry
/// replicas (clients watching drop it at once), then reports every service `NOT_SERVING`.
async fn leave(registrar: Option<Registrar>, health: &Health) {
    if let Some(registrar) = registrar {
        registrar.deregister().await;
    }
    for name in ["", health.service] {
        health
            .reporter
            .set_service_status(name, tonic_health::ServingStatus::NotServing)
            .await;
    }
}

/// Waits for tasks, giving up after [`GRACE`].
async fn join_all<T>(what: &str, handles: Vec<JoinHandle<T>>) {
    let all = async {
        for h in handles {
            if let Err(e) = h.await {
                tracing::error!(error = %e, what, "task failed");
            }
        }
    };
    if tokio::time::timeout(GRACE, all).await.is_err() {
        tracing::warn!(what, "did not stop within the grace period");
    }
}

/// Serves the gateway until `shutdown`, then lets in-flight requests finish for up to [`GRACE`].
async fn serve_gateway(
    listener: TcpListener,
    state: AppState,
    shutdown: &CancellationToken,
) -> Result<(), StartupError> {
    let serve = flashsale_gateway::app::serve(listener, state, shutdown.clone().cancelled_owned());
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(GRACE).await;
    };
    tokio::select! {
        result = serve => result.map_err(io("gateway failed")),
        () = grace => {
            tracing::warn!("gateway requests still running after the grace period");
            Ok(())
        }
    }
}

/// The whole system in one process: gateway, auth, inventory and order, each on its own port.
pub struct DevApp {
    http: TcpListener,
    http_addr: SocketAddr,
    grpc_addrs: Vec<SocketAddr>,
    gateway: AppState,
    registrars: Vec<Registrar>,
    servers: Vec<JoinHandle<Result<(), tonic::transport::Error>>>,
    servers_shutdown: CancellationToken,
    workers: Vec<JoinHandle<()>>,
    workers_shutdown: CancellationToken,
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
        if instances > 1 && !(inventory_uses_redis(&config) && auth_uses_redis(&config)) {
            return Err(StartupError::Config(
                "dev --instances above 1 needs shared state: set inventory.stock = \"redis\" and \
                 auth.sessions = \"redis\""
                    .into(),
            ));
        }
        let db = open_database(&config).await?;
        let keys = token_keys(&config, true).await?;
        let http = bind(&config.http_addr.to_string()).await?;
        let http_addr = local_addr(&http)?;

        let servers_shutdown = CancellationToken::new();
        let workers_shutdown = CancellationToken::new();
        let redis = redis_if_needed(
            &config,
            gateway_uses_redis(&config)
                || auth_uses_redis(&config)
                || inventory_uses_redis(&config),
        )
        .await?;
        let limit = config.grpc_max_in_flight;
        let mut servers = Vec::new();
        let mut workers = Vec::new();
        let mut grpc_addrs = Vec::new();

        // With a registry, every instance registers with it and every client balances over
        // what it announces, exactly as separate processes would.
        let registry = if use_registry {
            let listener = bind("127.0.0.1:0").await?;
            let addr = local_addr(&listener)?;
            let service = RegistryService::new(
                Duration::from_millis(config.registry.ttl_ms),
                servers_shutdown.clone(),
            );
            workers.push(service.spawn_evictor());
            servers.push(
                spawn_grpc(
                    listener,
                    service.into_server(),
                    limit,
                    telemetry.metrics.clone(),
                    servers_shutdown.clone(),
                )
                .0,
            );
            grpc_addrs.push(addr);
            Some(vec![addr.to_string()])
        } else {
            None
        };
        let client = |service: Service, fixed: &str| -> Result<Balanced, StartupError> {
            match &registry {
                Some(replicas) => {
                    let set = flashsale_registry::Source::Registry(replicas.clone())
                        .resolve(service.name(), &workers_shutdown)
                        .map_err(|e| StartupError::Config(e.to_string()))?;
                    Ok(Balanced::over(set, &config.discovery.balance))
                }
                None => Balanced::direct(fixed).map_err(|e| StartupError::Config(e.to_string())),
            }
        };

        let mut registrars = Vec::new();
        let mut first = None;
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
            let auth = build_auth(&config, db.clone(), keys.clone(), redis.as_ref()).await?;
            let (inventory, inventory_workers) = build_inventory(
                &config,
                db.clone(),
                &workers_shutdown,
                redis.as_ref(),
                false,
            )
            .await?;
            let releases = InventoryClient::new(client(Service::Inventory, &addrs[1].to_string())?);
            let (order, order_workers) =
                build_order(&config, db.clone(), releases, &workers_shutdown).await?;
            workers.extend(inventory_workers);
            workers.extend(order_workers);
            servers.push(
                spawn_grpc(
                    auth_l,
                    auth.into_server(),
                    limit,
                    telemetry.metrics.clone(),
                    servers_shutdown.clone(),
                )
                .0,
            );
            servers.push(
                spawn_grpc(
                    inv_l,
                    inventory.into_server(),
                    limit,
                    telemetry.metrics.clone(),
                    servers_shutdown.clone(),
                )
                .0,
            );
            servers.push(
                spawn_grpc(
                    order_l,
                    order.into_server(),
                    limit,
                    telemetry.metrics.clone(),
                    servers_shutdown.clone(),
                )
                .0,
            );
            if let Some(replicas) = &registry {
                for (service, addr) in [Service::Auth, Service::Inventory, Service::Order]
                    .into_iter()
                    .zip(addrs)
                {
                    let instance = flashsale_proto::registry::Instance {
                        service: service.name().to_owned(),
                        address: addr.to_string(),
                        weight: config.discovery.weight.max(1),
                        metadata: config.discovery.metadata.clone().into_iter().collect(),
                    };
                    registrars.push(
                        Registrar::start(
                            replicas,
                            instance,
                            Duration::from_millis(config.discovery.heartbeat_ms),
                        )
                        .map_err(|e| StartupError::Config(e.to_string()))?,
                    );
                }
            }
            first.get_or_insert(addrs.map(|a| a.to_string()));
            grpc_addrs.extend(addrs);
        }
        let [auth_addr, inv_addr, order_addr] = first.unwrap_or_default();
        let upstreams = Upstreams::new(
            client(Service::Auth, &auth_addr)?,
            client(Service::Inventory, &inv_addr)?,
            client(Service::Order, &order_addr)?,
        );
        if config.gateway.insecure_skip_auth {
            tracing::warn!(
                "gateway.insecure_skip_auth is on: customer requests are NOT authenticated \
                 (benchmark mode)"
            );
        }
        let gateway = gateway_state(&config, keys, upstreams, redis.as_ref(), telemetry)?;
        tracing::info!(%http_addr, instances, registry = use_registry, grpc = ?grpc_addrs, "flashsale dev started");
        Ok(Self {
            http,
            http_addr,
            grpc_addrs,
            gateway,
            registrars,
            servers,
            servers_shutdown,
            workers,
            workers_shutdown,
        })
    }

    /// The gateway's HTTP address (with the real port when configured with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Serves until `shutdown` is cancelled, then drains: gateway, gRPC servers, order workers.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        serve_gateway(self.http, self.gateway, &shutdown).await?;
        futures::future::join_all(self.registrars.into_iter().map(Registrar::deregister)).await;
        self.servers_shutdown.cancel();
        join_all("grpc servers", self.servers).await;
        self.workers_shutdown.cancel();
        join_all("order workers", self.workers).await;
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
    Grpc {
        server: JoinHandle<Result<(), tonic::transport::Error>>,
        health: Health,
        registrar: Option<Registrar>,
        server_shutdown: CancellationToken,
        workers: Vec<JoinHandle<()>>,
        workers_shutdown: CancellationToken,
    },
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
        let server_shutdown = CancellationToken::new();
        let workers_shutdown = CancellationToken::new();
        let discovery_shutdown = CancellationToken::new();
        let limit = config.grpc_max_in_flight;
        let s = &config.services;
        let ((server, health), addr, workers) = match service {
            Service::Gateway => {
                if config.gateway.insecure_skip_auth {
                    return Err(StartupError::Config(
                        "gateway.insecure_skip_auth is for benchmarks with `flashsale dev` only"
                            .into(),
                    ));
                }
                let keys = token_keys(&config, false).await?;
                let upstreams = crate::discovery::upstreams(&config, &discovery_shutdown)?;
                let listener = bind(&config.http_addr.to_string()).await?;
                let addr = local_addr(&listener)?;
                let redis = redis_if_needed(&config, gateway_uses_redis(&config)).await?;
                let state = gateway_state(&config, keys, upstreams, redis.as_ref(), telemetry)?;
                return Ok(Self {
                    service,
                    addr,
                    running: Running::Gateway { listener, state },
                    discovery_shutdown,
                });
            }
            Service::Auth => {
                let db = open_database(&config).await?;
                let keys = token_keys(&config, false).await?;
                let listener = bind(&listen_address(&s.auth)).await?;
                let addr = local_addr(&listener)?;
                let redis = redis_if_needed(&config, auth_uses_redis(&config)).await?;
                let auth = build_auth(&config, db, keys, redis.as_ref()).await?;
                let server = spawn_grpc(
                    listener,
                    auth.into_server(),
                    limit,
                    telemetry.metrics.clone(),
                    server_shutdown.clone(),
                );
                (server, addr, Vec::new())
            }
            Service::Inventory => {
                let db = open_database(&config).await?;
                let listener = bind(&listen_address(&s.inventory)).await?;
                let addr = local_addr(&listener)?;
                let redis = redis_if_needed(&config, inventory_uses_redis(&config)).await?;
                let (inventory, workers) =
                    build_inventory(&config, db, &workers_shutdown, redis.as_ref(), true).await?;
                let server = spawn_grpc(
                    listener,
                    inventory.into_server(),
                    limit,
                    telemetry.metrics.clone(),
                    server_shutdown.clone(),
                );
                (server, addr, workers)
            }
            Service::Order => {
                let db = open_database(&config).await?;
                let listener = bind(&listen_address(&s.order)).await?;
                let addr = local_addr(&listener)?;
                let inventory = crate::discovery::inventory(&config, &discovery_shutdown)?;
                let (order, workers) =
                    build_order(&config, db, inventory, &workers_shutdown).await?;
                let server = spawn_grpc(
                    listener,
                    order.into_server(),
                    limit,
                    telemetry.metrics.clone(),
                    server_shutdown.clone(),
                );
                (server, addr, workers)
            }
            Service::Registry => {
                let listener = bind(&config.registry.addr).await?;
                let addr = local_addr(&listener)?;
                let registry = RegistryService::new(
                    Duration::from_millis(config.registry.ttl_ms),
                    server_shutdown.clone(),
                );
                let workers = vec![registry.spawn_evictor()];
                let server = spawn_grpc(
                    listener,
                    registry.into_server(),
                    limit,
                    telemetry.metrics.clone(),
                    server_shutdown.clone(),
                );
                (server, addr, workers)
            }
        };
        let registrar = match service {
            Service::Registry | Service::Gateway => None,
            _ => crate::discovery::announce(&config, service, addr)?,
        };
        tracing::info!(?service, %addr, "serving");
        Ok(Self {
            service,
            addr,
            running: Running::Grpc {
                server,
                health,
                registrar,
                server_shutdown,
                workers,
                workers_shutdown,
            },
            discovery_shutdown,
        })
    }

    /// The address the service listens on (the real port when configured with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled, then drains (server first, then workers).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), StartupError> {
        let _stop_discovery = self.discovery_shutdown.drop_guard();
        match self.running {
            Running::Gateway { listener, state } => serve_gateway(listener, state, &shutdown).await,
            Running::Grpc {
                mut server,
                health,
                registrar,
                server_shutdown,
                workers,
                workers_shutdown,
            } => {
                let stopped_early = tokio::select! {
                    () = shutdown.cancelled() => None,
                    ended = &mut server => Some(ended),
                };
                // Out of rotation first, then drain.
                leave(registrar, &health).await;
                server_shutdown.cancel();
                if let Some(ended) = stopped_early {
                    // The server ended on its own: stop the workers and exit with its error.
                    workers_shutdown.cancel();
                    join_all("background workers", workers).await;
                    return match ended {
                        Ok(result) => result.map_err(StartupError::Transport),
                        Err(e) => Err(StartupError::Task(e)),
                    };
                }
                join_all("grpc server", vec![server]).await;
                workers_shutdown.cancel();
                join_all("background workers", workers).await;
                tracing::info!(service = ?self.service, "stopped");
                Ok(())
            }
        }
    }
}
