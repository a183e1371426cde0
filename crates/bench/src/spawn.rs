//! `--spawn`: runs `flashsale dev` (this same executable) on a temporary data dir, with a bench
//! admin and cheap password hashing (only preparation logs in; the rush never hashes). It
//! inherits the environment, so `FLASHSALE_GATEWAY__LIMITS__BACKEND=redis` and
//! `FLASHSALE_AUTH__SESSIONS=redis` bench the Redis backends (under a key prefix of its own,
//! inside `FLASHSALE_REDIS__KEY_PREFIX` when that is set; with `--redis-url` the bench deletes
//! those keys once the server is stopped). With `--server-cpus` it is started through
//! `taskset -c LIST` ([`crate::cpus`]).

use std::{process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Child,
};

use crate::{cpus::CpuSet, error::BenchError};

/// Admin of the spawned server.
pub const ADMIN_EMAIL: &str = "bench-admin@bench.example";
/// Its password.
pub const ADMIN_PASSWORD: &str = "bench-admin-password";
/// The line `flashsale dev` prints once it serves.
const READY_PREFIX: &str = "flashsale dev: gateway listening on ";

/// The environment variable naming the Redis key prefix of `flashsale dev`.
const PREFIX_VAR: &str = "FLASHSALE_REDIS__KEY_PREFIX";

/// The key prefix of one spawned server: a fresh part under `base` (default `flashsale-bench:`).
fn run_key_prefix(base: Option<String>) -> String {
    let base = base.unwrap_or_else(|| "flashsale-bench:".to_owned());
    format!("{base}bench-{:x}:", flashsale_storage::now_ms())
}

/// A spawned `flashsale dev`; killed when dropped.
pub struct Server {
    child: Child,
    /// Base URL of its gateway.
    pub url: String,
    /// Its database.
    pub database_url: String,
    /// The prefix of every key it writes in Redis (when configured to use Redis).
    pub key_prefix: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts the server, with extra configuration from `env` and pinned to `cpus` when given,
    /// and waits (up to a minute) for its ready line.
    pub async fn start(env: &[(&str, &str)], cpus: Option<&CpuSet>) -> Result<Self, BenchError> {
        let dir = tempfile::tempdir().map_err(|e| BenchError::Io("temporary data dir", e))?;
        let key_prefix = run_key_prefix(std::env::var(PREFIX_VAR).ok());
        let exe = std::env::current_exe().map_err(|e| BenchError::Io("finding flashsale", e))?;
        let mut child = crate::cpus::command(&exe, cpus)
            .args(["dev", "--http", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("FLASHSALE_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("FLASHSALE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("FLASHSALE_LOG", "warn")
            .env("FLASHSALE_AUTH__ARGON2__MEMORY_KIB", "1024")
            .env("FLASHSALE_AUTH__ARGON2__ITERATIONS", "1")
            // If the environment puts limits or sessions in Redis, this server's keys are its
            // own: a later run must not find the limits this one spent. They live under the
            // environment's prefix, when it names one, so whoever set it can delete them.
            // The same prefix as `key_prefix`, not a second call: the part is the clock's
            // milliseconds, and two calls on either side of a tick named two prefixes (the
            // keys under the server's were then never deleted).
            .env(PREFIX_VAR, &key_prefix)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Spawn(e.to_string()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Spawn("no stdout".to_owned()))?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix(READY_PREFIX) {
                    return Some(url.trim().to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| BenchError::Spawn("it exited or never printed its address".to_owned()))?;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let database_url = format!("sqlite://{}", dir.path().join("flashsale.db").display());
        Ok(Self {
            child,
            url,
            database_url,
            key_prefix,
            _dir: dir,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops it (SIGKILL; the data dir is thrown away anyway).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_gets_a_prefix_under_the_environments() {
        assert!(run_key_prefix(Some("test:abc:".into())).starts_with("test:abc:bench-"));
        assert!(run_key_prefix(None).starts_with("flashsale-bench:bench-"));
        assert!(run_key_prefix(None).ends_with(':'));
    }
}
