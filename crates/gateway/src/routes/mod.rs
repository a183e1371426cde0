//! HTTP handlers, one module per resource.

pub mod health;
pub mod orders;
pub mod sales;
pub mod sessions;
pub mod users;
