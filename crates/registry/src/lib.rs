//! Finding the instances of a service, and calling them well.
//!
//! Every gRPC service of flashsale can run as many processes. This crate holds what makes that
//! work, from both sides of a call:
//!
//! * [`server`]: the registry itself (`flashsale serve registry`). Instances register
//!   (service, address, weight, metadata) and heartbeat; an instance whose lease (the TTL) runs
//!   out is evicted; clients `Watch` a service and get the whole live set again after every
//!   change, pushed on a gRPC server stream (no polling).
//! * [`registrar`]: the instance's side: register with every registry replica, heartbeat,
//!   register again after an eviction or a registry restart, deregister on shutdown.
//! * [`resolver`]: the client's side: the live set of a service, from a static address list
//!   (Kubernetes, fixed deployments) or merged from every registry replica it can reach, so one
//!   replica going away changes nothing.
//! * [`balance`]: a cloneable gRPC channel over that set, built on `tower::balance::p2c`
//!   (power of two choices, least pending requests) with weighted slots as an option, and
//!   outlier ejection (an instance failing repeatedly sits out a cool-down, then gets traffic
//!   again).
//! * [`deadline`]: reading the caller's `grpc-timeout` on the server and passing on what
//!   remains, minus a reserve, on the next hop.

pub mod balance;
pub mod deadline;
pub mod registrar;
pub mod resolver;
pub mod retry;
pub mod server;

pub use balance::{BalanceConfig, Balanced, Policy};
pub use registrar::Registrar;
pub use resolver::{Endpoint, Source};
pub use server::RegistryService;

/// `host:port` or a URI → a URI tonic accepts (`http://host:port`).
pub fn uri_for(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

/// An address that is not a valid URI.
#[derive(Debug, thiserror::Error)]
#[error("invalid service address {address:?}: {source}")]
pub struct AddressError {
    address: String,
    #[source]
    source: tonic::codegen::http::uri::InvalidUri,
}

/// A lazily connecting channel to one address (connects on first use, reconnects after
/// failures).
pub fn lazy_channel(address: &str) -> Result<tonic::transport::Channel, AddressError> {
    Ok(tonic::transport::Channel::from_shared(uri_for(address))
        .map_err(|source| AddressError {
            address: address.to_owned(),
            source,
        })?
        .connect_timeout(std::time::Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy())
}
