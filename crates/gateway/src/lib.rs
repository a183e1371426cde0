//! The HTTP gateway: the only part of flashsale that faces shoppers.
//!
//! A buy request crosses it like this (see `docs/architecture.md`):
//!
//! 1. [`middleware`]: request id, W3C trace context, the request budget (a deadline; `504` when
//!    spent), JSON rendering of every error, panics caught as `500`.
//! 2. [`auth`]: the JWT is verified locally; its session (`jti`) comes from a local cache kept
//!    current by polling the auth service's revocations (fetched from auth on a miss), and must
//!    match the client's IP and User-Agent. A token already authenticated here for the same
//!    client is recognised from [`verified_tokens`] without repeating that work.
//! 3. [`buy`]: the buy flow, written once over an upstream trait — [`sales_cache`] answers
//!    unknown, not-yet-open and sold-out sales from local memory without a network hop (kept
//!    current by the inventory's stock events, [`stock_events`]), [`limits`] applies the
//!    anti-brush rate limits per client IP and per (user, sale), the inventory service reserves
//!    stock atomically, the order service queues the order durably, and the answer is
//!    `202 {order_id, status: "pending"}`; every refusal comes from one outcome table. Under
//!    load the reserves and submits of concurrent buyers share gRPC calls ([`batch`]).
//!    [`routes::orders`] is the thin HTTP adapter around it.
//!
//! The sale pages (`GET /api/v1/sales[/{id}]`) and their live stream are answered from
//! [`live_sales`], which the inventory's sales feed keeps current, and are conditional
//! ([`conditional`]); the reads are answered before the middleware stack ([`fast_path`]).
//!
//! [`assemble`] builds the gateway from its configuration section and the process's shared
//! parts; [`routes`] declares every route once, for the router and the OpenAPI document.

pub mod api;
pub mod app;
pub mod assemble;
pub mod auth;
pub mod batch;
pub mod buy;
pub mod client_ip;
pub mod conditional;
pub mod config;
pub mod error;
pub mod error_code;
pub mod extract;
pub mod fast_path;
pub mod limits;
pub mod live_sales;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod sales_cache;
pub mod stock_events;
pub mod upstream;
pub mod verified_tokens;

pub use app::{router, AppState};
pub use config::GatewayConfig;
