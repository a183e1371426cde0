//! The small core every flashsale crate may depend on, and that depends on no other flashsale
//! crate: nothing here knows about databases, Redis, HTTP or gRPC.
//!
//! * [`clock`]: the [`Clock`] trait, the wall clock ([`SystemClock`]) and a clock tests move by
//!   hand ([`ManualClock`]); [`now_ms`], the time unit stored in every table.
//! * [`credentials`]: the rules a sign-up's email and password must meet.
//! * [`duration`]: configured milliseconds and seconds to `Duration` and table milliseconds,
//!   saturating.
//! * [`ids`]: newtypes for the ids that cross service boundaries ([`UserId`], [`SaleId`],
//!   [`OrderId`]), so a sale id cannot be passed where a user id is meant.
//! * [`worker`]: named background tasks a service hands to whatever hosts it, so the host can
//!   stop them in order and say which one did not stop.
//! * [`held_stock`]: the port through which the order side tells the inventory which accepted
//!   orders hold stock.
//! * [`stock_event`]: what the inventory pushes to gateways about a sale's stock.
//! * [`periodic`]: one step every interval until shutdown (sweepers, reconcilers, refreshers).

pub mod clock;
pub mod credentials;
pub mod duration;
pub mod held_stock;
pub mod ids;
pub mod periodic;
pub mod stock_event;
pub mod worker;

pub use clock::{now_ms, Clock, ManualClock, SharedClock, SystemClock};
pub use ids::{OrderId, SaleId, UserId};
pub use stock_event::StockEvent;
pub use worker::{Assembled, Stops, Worker, Workers};
