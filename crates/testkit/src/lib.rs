//! Helpers for flashsale's tests (a dev-dependency only; the `testing` features of
//! flashsale-storage, flashsale-redis and flashsale-order use it too).
//!
//! * [`eventually`] (and [`Eventually`] for another polling interval): poll an async condition
//!   until it holds, failing with a message naming what was awaited once a deadline passes. Tests
//!   wait for *conditions*, never for fixed times.
//! * [`server`]: the one rule for a test whose server cannot be reached — under `CI=true` it
//!   fails naming the server, elsewhere it says why and is skipped ([`server::required`],
//!   [`server::skip_or_fail`]).
//! * the manual clock, re-exported from the kernel: [`ManualClock`].

pub mod eventually;
pub mod server;

pub use eventually::{eventually, Eventually, Outcome, LATE_PROBE};
pub use flashsale_kernel::ManualClock;
