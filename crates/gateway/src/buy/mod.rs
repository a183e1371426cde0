//! The buy path of `POST /api/v1/sales/{id}/orders`, apart from HTTP.
//!
//! * [`flow`]: the flow itself, written once — validate → local answer → limits → reserve →
//!   submit ([`buy`]);
//! * [`request`]: what a buy asks for ([`BuyInput`]), the quantity bounds, the order id;
//! * [`outcome`]: the tables of what each answer means — status, error code, metric label,
//!   and what an inventory answer teaches the sale cache;
//! * [`charge`]: when a buy is charged against the anti-brush limits;
//! * [`memory`]: what the gateway remembers between buys (sale cache, accepted order ids);
//! * [`upstream`]: the [`BuyUpstream`] trait — sale lookup, limits, reserve, submit — and
//!   [`services`], the gateway's implementation of it over gRPC and the limiter;
//! * [`in_process`]: reserve and submit called on services in this process (`flashsale dev`).
//!
//! The handler (`routes::orders::buy`) extracts the request, calls [`buy`] with
//! [`services::Services`] and renders `202 {order_id, status: "pending"}`; the unit tests run
//! the flow against a fake upstream, without servers.

pub mod charge;
pub mod flow;
pub mod in_process;
pub mod memory;
pub mod outcome;
pub mod request;
pub mod services;
pub mod upstream;

#[cfg(test)]
mod tests;

pub use flow::buy;
pub use memory::{accepted_orders, AcceptedOrders, BuyMemory};
pub use request::{order_id_for, BuyInput, MAX_QUANTITY};
pub use services::Services;
pub use upstream::BuyUpstream;
