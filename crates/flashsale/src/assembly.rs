//! One process's shared parts, and each service assembled from them.
//!
//! A process opens what its services share once — the database, the Redis connection, the
//! token keys — and only when a service asks for it: `serve gateway` never opens the database,
//! and a process whose backends are all in memory never connects to Redis. Each function here
//! hands a service its own configuration section and those parts; the service crate chooses its
//! backends and starts its workers (see each crate's `assemble` module). What is left here is
//! the wiring between services: the order side's record of held stock goes to the inventory,
//! the inventory client to the order service, the service clients to the gateway.

use std::{path::Path, sync::Arc};

use flashsale_auth::{
    assemble::{AuthParts, FirstAdmin},
    token::{RetiredKey, SigningKey, TokenKeys},
    AuthService,
};
use flashsale_gateway::{assemble::GatewayParts, upstream::Upstreams, AppState};
use flashsale_inventory::{
    assemble::{InventoryParts, Start},
    InventoryService,
};
use flashsale_kernel::{Assembled, SharedClock, Stops, SystemClock};
use flashsale_order::{assemble::OrderParts, release::StockReleaser, OrderService};
use flashsale_redis::SharedRedis;
use flashsale_storage::{Database, Durability};
use tokio::sync::OnceCell;

use crate::{config::Config, startup::StartupError, startup::Telemetry};

/// The parts of one process that its services share, opened on first use.
#[derive(Debug)]
pub struct Shared {
    config: Config,
    /// Whether this is `flashsale dev` (a generated signing secret is allowed).
    dev: bool,
    db: OnceCell<Database>,
    keys: OnceCell<TokenKeys>,
    redis: SharedRedis,
    clock: SharedClock,
    telemetry: Telemetry,
}

impl Shared {
    /// The shared parts of a process run with `config`; nothing is opened yet.
    pub fn new(config: Config, dev: bool, telemetry: Telemetry) -> Self {
        Self {
            redis: SharedRedis::new(config.redis.clone()),
            config,
            dev,
            db: OnceCell::new(),
            keys: OnceCell::new(),
            clock: SystemClock::shared(),
            telemetry,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The process's telemetry.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The database, opened (and migrated) on first use.
    pub async fn db(&self) -> Result<Database, StartupError> {
        self.db
            .get_or_try_init(|| open_database(&self.config))
            .await
            .cloned()
    }

    /// The token keys, read on first use.
    pub async fn keys(&self) -> Result<TokenKeys, StartupError> {
        self.keys
            .get_or_try_init(|| token_keys(&self.config, self.dev))
            .await
            .cloned()
    }

    /// The process's clock.
    pub fn clock(&self) -> SharedClock {
        Arc::clone(&self.clock)
    }

    /// The process's Redis handle (connects on first use by a backend that lives in Redis).
    pub fn redis(&self) -> SharedRedis {
        self.redis.clone()
    }
}

/// The auth service (no workers).
pub async fn auth(shared: &Shared) -> Result<AuthService, StartupError> {
    let config = shared.config();
    let admin = match (&config.admin_email, &config.admin_password) {
        (Some(email), Some(password)) => Some(FirstAdmin {
            email: email.clone(),
            password: password.clone(),
        }),
        _ => None,
    };
    let parts = AuthParts {
        db: shared.db().await?,
        redis: shared.redis(),
        keys: shared.keys().await?,
        clock: shared.clock(),
    };
    Ok(flashsale_auth::assemble::assemble(&config.auth, parts, admin.as_ref()).await?)
}

/// The inventory service and its workers (which stop at `stops`); the order side (for `order.queue`) says which
/// accepted orders hold stock.
pub async fn inventory(
    shared: &Shared,
    start: Start,
    stops: &Stops,
) -> Result<Assembled<InventoryService>, StartupError> {
    let config = shared.config();
    let db = shared.db().await?;
    let parts = InventoryParts {
        orders: flashsale_order::held::held_stock(&config.order, db.clone()).await?,
        db,
        redis: shared.redis(),
        clock: shared.clock(),
    };
    Ok(flashsale_inventory::assemble::assemble(&config.inventory, parts, start, stops).await?)
}

/// The order service and its workers; `releaser` takes back the stock of cancelled and expired
/// orders (a client of the inventory); its workers stop at `stops`.
pub async fn order(
    shared: &Shared,
    releaser: Arc<dyn StockReleaser>,
    stops: &Stops,
) -> Result<Assembled<OrderService>, StartupError> {
    let parts = OrderParts {
        db: shared.db().await?,
        releaser,
        clock: shared.clock(),
    };
    Ok(flashsale_order::assemble::assemble(&shared.config().order, parts, stops).await?)
}

/// The gateway's state over clients of the services.
pub async fn gateway(shared: &Shared, upstreams: Upstreams) -> Result<AppState, StartupError> {
    let parts = GatewayParts {
        keys: shared.keys().await?,
        upstreams,
        redis: shared.redis(),
        metrics: shared.telemetry().metrics.clone(),
        traces: shared.telemetry().traces.clone(),
        clock: shared.clock(),
    };
    Ok(flashsale_gateway::assemble::assemble(&shared.config().gateway, parts).await?)
}

async fn open_database(config: &Config) -> Result<Database, StartupError> {
    let url = config.database_url();
    if config.database_url.is_none() {
        tokio::fs::create_dir_all(&config.data_dir)
            .await
            .map_err(|source| StartupError::Io {
                context: format!("cannot create {}", config.data_dir.display()),
                source,
            })?;
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

async fn dev_secret(data_dir: &Path) -> Result<String, StartupError> {
    let io = |context: String| move |source| StartupError::Io { context, source };
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
