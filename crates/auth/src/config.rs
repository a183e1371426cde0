//! Configuration of the auth service.

use serde::Deserialize;

use crate::password::HashParams;

/// Where sessions are kept.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SessionBackend {
    /// In the auth process (lost when it restarts; one auth instance).
    #[default]
    Memory,
    /// In Redis (the top-level `redis` section), shared by every auth instance.
    Redis,
}

/// Settings of the auth service; defaults are production-grade except the signing secret,
/// which the binary must supply.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Token lifetime in seconds (default 15 minutes).
    pub token_ttl_secs: u64,
    /// Argon2id cost parameters.
    pub argon2: HashParams,
    /// `iss` claim written and required.
    pub issuer: String,
    /// `aud` claim written and required.
    pub audience: String,
    /// Where sessions are kept.
    pub sessions: SessionBackend,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_ttl_secs: 15 * 60,
            argon2: HashParams::default(),
            issuer: "flashsale".into(),
            audience: "flashsale-api".into(),
            sessions: SessionBackend::default(),
        }
    }
}
