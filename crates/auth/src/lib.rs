//! The auth service (article chapter 4.1): users, passwords, tokens and sessions.
//!
//! * [`password`] hashes with argon2id on the blocking pool, so a login never stalls the async
//!   workers, and compares in constant time.
//! * [`token`] issues and verifies short-lived JWTs (HS256, `kid`, `iss`, `aud`, `jti`). The
//!   gateway verifies tokens itself with the same [`token::TokenKeys`]; only the session behind a
//!   token needs a call to this service (and is cached briefly by the gateway).
//! * [`store`] holds the storage traits and their embedded implementations: users in the SQL
//!   database, sessions in process memory.
//! * [`service`] is the gRPC server over those parts.

pub mod config;
pub mod password;
pub mod service;
pub mod store;
pub mod token;

pub use config::AuthConfig;
pub use service::AuthService;
