//! The auth service (article chapter 4.1): users, passwords, tokens and sessions.
//!
//! * [`password`] hashes with argon2id on the blocking pool, so a login never stalls the async
//!   workers, and compares in constant time.
//! * [`token`] issues and verifies short-lived JWTs (HS256 only, `kid` with key rotation, `iss`,
//!   `aud`, `typ`, `jti`). The gateway verifies tokens itself with the same
//!   [`token::TokenKeys`]; only the session behind a token needs a call to this service (and
//!   the gateway caches it for the session's life, dropping it when the revocation log says so).
//! * [`store`] holds the storage traits and their implementations: users in the SQL database,
//!   sessions in process memory or in Redis (shared by every auth instance), chosen by
//!   [`config::SessionBackend`].
//! * [`service`] is the gRPC server over those parts.
//! * [`assemble`] builds the service from its configuration section and the process's
//!   database and Redis.

pub mod assemble;
pub mod config;
pub mod password;
pub mod schema;
pub mod service;
pub mod store;
/// Token issue and verification (the `flashsale-token` crate, which the gateway uses alone).
pub use flashsale_token as token;

pub use config::AuthConfig;
pub use schema::schema;
pub use service::AuthService;
