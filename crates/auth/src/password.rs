//! Password hashing with argon2id.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`), so the parameters travel with
//! each hash and can be raised later without invalidating old ones. Hashing costs tens of
//! milliseconds of CPU and ~19 MiB of memory by design; it runs on tokio's blocking pool, at most
//! one hash per CPU at a time (a login surge queues instead of exhausting memory; a queued
//! request whose deadline passes gives up its place). Logins for unknown emails
//! verify against a dummy hash so that they take as long as real ones (no user enumeration by
//! timing).

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Algorithm, Argon2, Params, Version,
};
use std::sync::Arc;

use serde::Deserialize;
use tokio::sync::Semaphore;

/// Argon2id cost parameters. The default is OWASP's minimum recommendation
/// (19 MiB, 2 iterations, 1 lane).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct HashParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Parallelism (lanes).
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Errors of the password hasher.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The parameters are out of argon2's range.
    #[error("invalid argon2 parameters: {0}")]
    Params(argon2::Error),
    /// Hashing failed.
    #[error("password hashing failed: {0}")]
    Hash(argon2::password_hash::Error),
    /// The blocking task was cancelled or panicked.
    #[error("password hashing task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The hasher was shut down.
    #[error("password hasher closed")]
    Closed,
}

/// Hashes and verifies passwords with fixed parameters.
#[derive(Clone)]
pub struct PasswordHasherPool {
    argon: Argon2<'static>,
    dummy_hash: String,
    /// One permit per hash allowed to run at once.
    running: Arc<Semaphore>,
}

impl std::fmt::Debug for PasswordHasherPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasherPool").finish_non_exhaustive()
    }
}

impl PasswordHasherPool {
    /// Builds a hasher; fails when the parameters are out of range.
    pub fn new(params: HashParams) -> Result<Self, PasswordError> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(PasswordError::Params)?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_hash = hash_with(&argon, "dummy password for unknown users")?;
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Ok(Self {
            argon,
            dummy_hash,
            running: Arc::new(Semaphore::new(cpus)),
        })
    }

    /// Runs one hashing job on the blocking pool once a permit is free. The permit moves into
    /// the job, so it is held until the hash is done even if the caller stops waiting.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PasswordError> {
        let permit = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| PasswordError::Closed)?;
        Ok(tokio::task::spawn_blocking(move || {
            let result = job();
            drop(permit);
            result
        })
        .await?)
    }

    /// Hashes a password on the blocking pool.
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        let argon = self.argon.clone();
        self.run(move || hash_with(&argon, &password)).await?
    }

    /// Verifies a password against a stored hash on the blocking pool; with `None` (unknown
    /// user) it verifies against a dummy hash and answers `false`, taking the same time.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, PasswordError> {
        let argon = self.argon.clone();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.clone());
        let ok = self
            .run(move || {
                // A stored hash that does not parse matches nothing.
                PasswordHash::new(&hash)
                    .map(|parsed| argon.verify_password(password.as_bytes(), &parsed).is_ok())
                    .unwrap_or(false)
            })
            .await?;
        Ok(ok && known)
    }
}

fn hash_with(argon: &Argon2<'_>, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(PasswordError::Hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasherPool {
        PasswordHasherPool::new(HashParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn verifies_the_right_password_only() {
        let hasher = cheap();
        let hash = hasher.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher
            .verify("correct horse".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!hasher
            .verify("wrong horse".into(), Some(hash))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn unknown_user_never_verifies() {
        let hasher = cheap();
        assert!(!hasher
            .verify("dummy password for unknown users".into(), None)
            .await
            .unwrap());
    }

    #[test]
    fn default_params_meet_owasp_minimum() {
        let p = HashParams::default();
        assert!(p.memory_kib >= 19 * 1024 && p.iterations >= 2 && p.parallelism >= 1);
    }
}
