//! Generated gRPC clients, servers and messages of the flashsale services.
//!
//! The `.proto` contracts live in `proto/` at the repository root; `build.rs` compiles them with
//! `protox` (a protobuf compiler written in Rust) and `tonic-prost-build`, so building needs no
//! `protoc`. Each service gets its own module named after its protobuf package.
#![allow(missing_docs, clippy::all)]

/// Auth service: users, login, sessions.
pub mod auth {
    tonic::include_proto!("flashsale.auth.v1");
}

/// Inventory service: sales, stock, reservations.
pub mod inventory {
    tonic::include_proto!("flashsale.inventory.v1");
}

/// Order service: intake queue, persistence, state machine.
pub mod order {
    tonic::include_proto!("flashsale.order.v1");
}

/// Service registry: registration, heartbeats, watching the live instances of a service.
pub mod registry {
    tonic::include_proto!("flashsale.registry.v1");
}
