//! The whole system in one process (the `flashsale dev` composition on ephemeral ports, real
//! HTTP and gRPC), driven as a client drives it: one test binary, one module per theme.
//!
//! * the HTTP API end to end, one module per part of it ([`users`], [`sessions`], [`sales`],
//!   [`buying`], [`orders`], [`operations`]; helpers in [`support`]): every endpoint, and every
//!   error status a client can provoke — with the JSON error shape
//!   `{"error": {"code", "message", "request_id"}}` and, for bad input, proof that nothing
//!   changed (guarantee 6);
//! * [`auth`]: login, logout, tokens bound to their client, and the anti-brush limits, on both
//!   backends (in process and in Redis);
//! * [`concurrency`]: a rush of thousands of buyers, on both backends; [`engines`]: a rush on
//!   every database engine;
//! * telemetry: [`logs`] (no personal data in clear, from the real binary), [`traces`] (one buy
//!   is one trace across every hop), [`metrics`] (a rush in valid metrics, the dashboard's
//!   queries).
//!
//! nextest runs every test in a process of its own. [`traces`] and [`metrics`] install
//! process-wide telemetry; under plain `cargo test`, where the tests of a binary share one
//! process, they run alone ([`common::alone_in_process`]).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod buying;
mod concurrency;
mod engines;
mod logs;
mod metrics;
mod operations;
mod orders;
mod sales;
mod sessions;
mod support;
mod traces;
mod users;
