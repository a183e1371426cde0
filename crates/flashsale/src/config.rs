//! Typed configuration: defaults → TOML file (`--config`) → `FLASHSALE_*` environment → flags.
//!
//! Nested keys use `__` in environment variables: `FLASHSALE_GATEWAY__BUDGET_MS=300` sets
//! `gateway.budget_ms`. Every value has a default that runs, except the token signing secret in
//! `serve` mode (`FLASHSALE_JWT_SECRET`), which must never have a built-in value in production.
//! `flashsale dev` generates one into its data directory instead.

use std::{net::SocketAddr, path::PathBuf};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use flashsale_auth::AuthConfig;
use flashsale_gateway::GatewayConfig;
use flashsale_inventory::InventoryConfig;
use flashsale_order::OrderConfig;
use serde::Deserialize;

use crate::cli::{Cli, Command};

/// Log line format.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Pretty,
    /// JSON lines.
    Json,
}

impl From<LogFormat> for flashsale_telemetry::logging::LogFormat {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Pretty => Self::Pretty,
            LogFormat::Json => Self::Json,
        }
    }
}

/// How hard database commits are pushed to disk.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Survives a killed process (default).
    #[default]
    Process,
    /// Survives power loss too (an fsync per commit).
    Power,
}

/// Where each gRPC service listens (`serve`) or is reached (gateway, order → inventory). With
/// static discovery a comma-separated list makes clients balance over every address listed
/// (`serve` listens on the first).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServiceAddrs {
    /// Auth service.
    pub auth: String,
    /// Inventory service.
    pub inventory: String,
    /// Order service.
    pub order: String,
}

impl Default for ServiceAddrs {
    fn default() -> Self {
        Self {
            auth: "127.0.0.1:50051".into(),
            inventory: "127.0.0.1:50052".into(),
            order: "127.0.0.1:50053".into(),
        }
    }
}

/// Where clients find the instances of a service.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DiscoverySource {
    /// The addresses in `services.*` (a comma-separated list balances over all of them).
    #[default]
    Static,
    /// The registry replicas in `discovery.registries`.
    Registry,
}

/// Service discovery, balancing, and how this instance announces itself (`discovery.*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DiscoveryConfig {
    /// Where clients find instances.
    pub source: DiscoverySource,
    /// Registry replicas (`host:port`); with `source = "registry"`, instances register with
    /// all of them and clients merge what they see.
    pub registries: Vec<String>,
    /// Balancing policy and outlier ejection.
    pub balance: flashsale_registry::BalanceConfig,
    /// This instance's weight when it registers.
    pub weight: u32,
    /// Address registered for this instance [default: the address it listens on].
    pub advertise: Option<String>,
    /// Metadata registered with this instance.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Heartbeat interval (at most a third of the registry's TTL is used).
    pub heartbeat_ms: u64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            source: DiscoverySource::Static,
            registries: vec!["127.0.0.1:50050".into()],
            balance: flashsale_registry::BalanceConfig::default(),
            weight: 1,
            advertise: None,
            metadata: std::collections::BTreeMap::new(),
            heartbeat_ms: 1_000,
        }
    }
}

impl DiscoveryConfig {
    /// Checks this section's own rules.
    pub fn check(&self) -> Result<(), String> {
        if self.source == DiscoverySource::Registry && self.registries.is_empty() {
            return Err("discovery.source = registry needs discovery.registries".into());
        }
        Ok(())
    }
}

/// `flashsale dev` only.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DevConfig {
    /// Instances of each gRPC service (`--instances`); above 1 needs Redis stock and sessions.
    pub instances: usize,
    /// Put the services behind an in-process registry even with one instance (`--registry`);
    /// always on with more than one instance.
    pub registry: bool,
}

impl Default for DevConfig {
    fn default() -> Self {
        Self {
            instances: 1,
            registry: false,
        }
    }
}

/// The registry service (`flashsale serve registry`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// Where it listens.
    pub addr: String,
    /// Lease of an instance after each heartbeat; evicted when it runs out.
    pub ttl_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:50050".into(),
            ttl_ms: 3_000,
        }
    }
}

/// A signing key that has been replaced: it still verifies the tokens it signed before
/// `retired_at` until they expire, then it is ignored (and can be deleted from the config).
#[derive(Debug, Clone, Deserialize)]
pub struct RetiredKeyConfig {
    /// Its `kid`.
    pub kid: String,
    /// Its secret.
    pub secret: String,
    /// When it stopped signing (Unix seconds).
    pub retired_at: i64,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Database URL, which chooses the engine (`FLASHSALE_DATABASE_URL`): `sqlite://PATH`
    /// (default `sqlite://<data_dir>/flashsale.db`), `postgres://…`/`postgresql://…`, or
    /// `mysql://…`/`mariadb://…`.
    pub database_url: Option<String>,
    /// Commit durability (SQLite's fsync policy; on the servers see `flashsale_storage::connect`).
    pub durability: Durability,
    /// Directory for the embedded database and (in `dev`) the generated signing key.
    pub data_dir: PathBuf,
    /// Log filter, e.g. `info` or `info,flashsale_order=debug`.
    pub log: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Email of the first admin, created or promoted at start (`FLASHSALE_ADMIN_EMAIL`).
    pub admin_email: Option<String>,
    /// Password of the first admin (`FLASHSALE_ADMIN_PASSWORD`).
    pub admin_password: Option<String>,
    /// Token signing secret, at least 32 bytes (`FLASHSALE_JWT_SECRET`).
    pub jwt_secret: Option<String>,
    /// Id of the signing key, written as the token's `kid`.
    pub jwt_kid: String,
    /// Previous signing keys, kept verifying until their tokens expire (key rotation).
    pub jwt_retired_keys: Vec<RetiredKeyConfig>,
    /// Redis, for the backends configured to use it (`gateway.limits.backend`,
    /// `auth.sessions`).
    pub redis: flashsale_redis::RedisConfig,
    /// HTTP address of the gateway.
    pub http_addr: SocketAddr,
    /// gRPC addresses of the services.
    pub services: ServiceAddrs,
    /// Service discovery and balancing.
    pub discovery: DiscoveryConfig,
    /// The registry service.
    pub registry: RegistryConfig,
    /// `flashsale dev` settings.
    pub dev: DevConfig,
    /// Requests each gRPC service serves at once; more are shed at once with
    /// `RESOURCE_EXHAUSTED` (the gateway answers `503` with `Retry-After`).
    pub grpc_max_in_flight: usize,
    /// Gateway settings.
    pub gateway: GatewayConfig,
    /// Auth service settings.
    pub auth: AuthConfig,
    /// Inventory service settings.
    pub inventory: InventoryConfig,
    /// Order service settings.
    pub order: OrderConfig,
    /// Trace recording and export (`traces.otlp_endpoint`, `traces.sample_ratio`,
    /// `traces.buffer_spans`).
    pub traces: flashsale_telemetry::traces::TracesConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: None,
            durability: Durability::default(),
            data_dir: PathBuf::from("./flashsale-data"),
            log: "info".into(),
            log_format: LogFormat::default(),
            admin_email: None,
            admin_password: None,
            jwt_secret: None,
            jwt_kid: "k1".into(),
            jwt_retired_keys: Vec::new(),
            redis: flashsale_redis::RedisConfig::default(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            services: ServiceAddrs::default(),
            discovery: DiscoveryConfig::default(),
            registry: RegistryConfig::default(),
            dev: DevConfig::default(),
            grpc_max_in_flight: 10_000,
            gateway: GatewayConfig::default(),
            auth: AuthConfig::default(),
            inventory: InventoryConfig::default(),
            order: OrderConfig::default(),
            traces: flashsale_telemetry::traces::TracesConfig::default(),
        }
    }
}

impl Config {
    /// Checks every section's own rules, then the rules that span several sections (those
    /// stay here; a section's own rules live beside it).
    pub fn check(&self) -> Result<(), String> {
        self.gateway.check()?;
        self.order.check()?;
        self.discovery.check()?;
        // A request that passed the queue's age check may still wait for a database lock before
        // it commits; the grace period must outlast both, with room to spare. BUSY_TIMEOUT bounds
        // that wait on every engine (SQLite busy timeout, PostgreSQL lock/statement timeout,
        // MySQL lock wait timeouts).
        let lock_wait_ms =
            u64::try_from(flashsale_storage::BUSY_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        let needed = self
            .order
            .max_accept_age_ms
            .saturating_add(lock_wait_ms)
            .saturating_add(GRACE_MARGIN_MS);
        if self.inventory.reservation_grace_ms < needed {
            return Err(format!(
                "inventory.reservation_grace_ms ({}) must be at least order.max_accept_age_ms ({}) + \
                 the database lock wait ({lock_wait_ms}) + {GRACE_MARGIN_MS}: stock of a reservation may only \
                 be given back once its order can no longer be queued",
                self.inventory.reservation_grace_ms, self.order.max_accept_age_ms
            ));
        }
        if self.order.max_accept_age_ms <= self.gateway.budget_ms {
            return Err(format!(
                "order.max_accept_age_ms ({}) must exceed gateway.budget_ms ({})",
                self.order.max_accept_age_ms, self.gateway.budget_ms
            ));
        }
        Ok(())
    }

    /// Whether several instances of each service can share state: stock and sessions in Redis
    /// (`dev --instances` above 1 needs it).
    pub fn shares_state_between_instances(&self) -> bool {
        self.inventory.stock == flashsale_inventory::config::StockBackend::Redis
            && self.auth.sessions == flashsale_auth::config::SessionBackend::Redis
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("flashsale.db").display()))
    }
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

/// The loopback networks `flashsale dev` trusts as proxies by default, so a local load test can
/// simulate many clients with `X-Forwarded-For`.
pub const DEV_TRUSTED_PROXIES: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// Slack between the latest possible journal commit and the voiding of a reservation.
const GRACE_MARGIN_MS: u64 = 5_000;

/// Loads the configuration for a command line.
pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
    let mut figment = Figment::new();
    if let Command::Dev(_) = cli.command {
        figment = figment.merge(Serialized::default(
            "gateway.trusted_proxies",
            DEV_TRUSTED_PROXIES,
        ));
    }
    if let Some(path) = &cli.config {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Env::prefixed("FLASHSALE_").split("__"));
    if let Command::Dev(dev) = &cli.command {
        if let Some(http) = dev.http {
            figment = figment.merge(Serialized::default("http_addr", http));
        }
        if let Some(dir) = &dev.data_dir {
            figment = figment.merge(Serialized::default("data_dir", dir));
        }
        if let Some(instances) = dev.instances {
            figment = figment.merge(Serialized::default("dev.instances", instances));
        }
        if dev.registry {
            figment = figment.merge(Serialized::default("dev.registry", true));
        }
    }
    figment.extract().map_err(|e| ConfigError(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_backends_are_read_from_configuration() {
        let config: Config = Figment::new()
            .merge(Toml::string(
                r#"
                [gateway.limits]
                backend = "redis"
                buy_per_ip = "20/min"
                login_per_account = { limit = 2, period_ms = 30000 }
                register_per_ip = "off"
                [auth]
                sessions = "redis"
                [redis]
                url = "redis://10.0.0.5:6379/2"
                "#,
            ))
            .extract()
            .unwrap();
        let limits = &config.gateway.limits;
        assert_eq!(
            limits.backend,
            flashsale_gateway::config::LimitsBackend::Redis
        );
        assert_eq!(limits.buy_per_ip, flashsale_limits::Rate::per_minute(20));
        assert_eq!(limits.login_per_account.period_ms, 30_000);
        assert!(!limits.register_per_ip.is_on());
        // Untouched rules keep their defaults.
        assert_eq!(
            limits.buy_per_user_sale,
            flashsale_limits::Rate::per_second(3)
        );
        assert_eq!(
            config.auth.sessions,
            flashsale_auth::config::SessionBackend::Redis
        );
        assert_eq!(config.redis.url, "redis://10.0.0.5:6379/2");
        assert_eq!(config.redis.key_prefix, "flashsale:");

        let bad: Result<Config, _> = Figment::new()
            .merge(Toml::string(
                "[gateway.limits]\nbuy_per_ip = \"10 a minute\"",
            ))
            .extract();
        assert!(bad.unwrap_err().to_string().contains("invalid rate"));
    }

    #[test]
    fn defaults_pass_the_cross_section_checks() {
        assert!(Config::default().check().is_ok());
    }

    #[test]
    fn a_grace_shorter_than_the_queue_age_limit_is_refused() {
        let mut config = Config::default();
        config.inventory.reservation_grace_ms = config.order.max_accept_age_ms;
        assert!(config.check().is_err());
        let mut config = Config::default();
        // Longer than the age limit, but not by the database lock wait.
        config.inventory.reservation_grace_ms = config.order.max_accept_age_ms + 1_000;
        assert!(config.check().is_err());
        let mut config = Config::default();
        config.gateway.budget_ms = config.order.max_accept_age_ms;
        assert!(config.check().is_err());
        let mut config = Config::default();
        config.order.journal_batch_max = 10_000;
        assert!(config.check().is_err());
        let mut config = Config::default();
        config.order.nats.publish_timeout_ms = 9_500;
        assert!(config.check().is_err());
    }

    #[test]
    fn the_nats_queue_is_chosen_and_pointed_at_a_server_in_toml() {
        let config: Config = Figment::new()
            .merge(Toml::string(
                "[order]\nqueue = \"nats\"\n[order.nats]\nurl = \"nats://10.0.0.7:4222\"\nstream = \"S\"\nsubject = \"s.orders\"\ndurable = \"d\"",
            ))
            .extract()
            .unwrap();
        assert_eq!(
            config.order.queue,
            flashsale_order::config::QueueBackend::Nats
        );
        assert_eq!(config.order.nats.url, "nats://10.0.0.7:4222");
        assert_eq!(
            (
                config.order.nats.stream.as_str(),
                config.order.nats.subject.as_str(),
                config.order.nats.durable.as_str()
            ),
            ("S", "s.orders", "d")
        );
        assert_eq!(config.order.nats.publish_timeout_ms, 5_000);
        assert!(config.check().is_ok());
        let direct: Config = Figment::new().extract().unwrap();
        assert_eq!(
            direct.order.queue,
            flashsale_order::config::QueueBackend::Direct
        );
    }
}
