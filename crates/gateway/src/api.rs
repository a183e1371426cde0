//! The JSON shapes of the HTTP API (snake_case; times RFC 3339; money in integer cents).

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Converts Unix milliseconds to a UTC time (the epoch for out-of-range values).
pub fn time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Register or log in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Email address.
    #[schema(example = "ann@example.com")]
    pub email: String,
    /// Password, 8 to 128 characters.
    #[schema(example = "correct horse battery")]
    pub password: String,
}

/// The answer to a registration. It is the same whether the email was new or already taken,
/// so registration cannot be used to find out who has an account.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegistrationAccepted {
    /// Normalised email.
    pub email: String,
    /// What happens next.
    pub message: String,
}

/// A login's token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// Bearer token for `Authorization: Bearer …`.
    pub token: String,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
}

/// A sale to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSale {
    /// Item name.
    #[schema(example = "Phone X, 128 GB")]
    pub name: String,
    /// Unit price in cents.
    #[schema(example = 99900)]
    pub price_cents: i64,
    /// Initial stock.
    #[schema(example = 1000)]
    pub stock: i64,
    /// Most units one user may buy (default 1).
    #[serde(default = "one")]
    #[schema(example = 1)]
    pub per_user_limit: i64,
    /// Opening time.
    pub starts_at: DateTime<Utc>,
    /// Closing time.
    pub ends_at: DateTime<Utc>,
}

fn one() -> i64 {
    1
}

/// A sale with its live remaining stock.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Sale {
    /// Id.
    pub id: i64,
    /// Item name.
    pub name: String,
    /// Unit price in cents.
    pub price_cents: i64,
    /// Initial stock.
    pub stock: i64,
    /// Units not yet sold or reserved.
    pub remaining: i64,
    /// Most units one user may buy.
    pub per_user_limit: i64,
    /// Opening time.
    pub starts_at: DateTime<Utc>,
    /// Closing time.
    pub ends_at: DateTime<Utc>,
}

impl From<flashsale_proto::inventory::Sale> for Sale {
    fn from(s: flashsale_proto::inventory::Sale) -> Self {
        Self {
            id: s.id,
            name: s.name,
            price_cents: s.price_cents,
            stock: s.stock,
            remaining: s.remaining,
            per_user_limit: s.per_user_limit,
            starts_at: time(s.starts_at_ms),
            ends_at: time(s.ends_at_ms),
        }
    }
}

/// A buy.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuyRequest {
    /// Units to buy (default 1).
    #[serde(default = "one")]
    #[schema(example = 1)]
    pub quantity: i64,
}

/// An accepted buy.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BuyAccepted {
    /// Id of the order; the same for every retry with the same `Idempotency-Key`.
    pub order_id: String,
    /// Always `pending`: the order is queued and becomes `created` within moments.
    pub status: String,
}

/// An order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Order {
    /// Id.
    pub id: String,
    /// Sale.
    pub sale_id: i64,
    /// Units.
    pub quantity: i64,
    /// Unit price in cents.
    pub price_cents: i64,
    /// `pending`, `created`, `paid`, `cancelled` or `expired`.
    pub status: String,
    /// When the buy was accepted.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When an unpaid order expires (absent while pending).
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<flashsale_proto::order::Order> for Order {
    fn from(o: flashsale_proto::order::Order) -> Self {
        let status = match o.status() {
            flashsale_proto::order::OrderStatus::Pending => "pending",
            flashsale_proto::order::OrderStatus::Created => "created",
            flashsale_proto::order::OrderStatus::Paid => "paid",
            flashsale_proto::order::OrderStatus::Cancelled => "cancelled",
            flashsale_proto::order::OrderStatus::Expired => "expired",
            flashsale_proto::order::OrderStatus::Unspecified => "unknown",
        };
        Self {
            id: o.id,
            sale_id: o.sale_id,
            quantity: o.quantity,
            price_cents: o.price_cents,
            status: status.into(),
            created_at: time(o.created_at_ms),
            updated_at: time(o.updated_at_ms),
            expires_at: (o.expires_at_ms > 0).then(|| time(o.expires_at_ms)),
        }
    }
}

/// A health answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
}

/// The spans of one trace still in the process's span buffer, oldest start first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TraceView {
    /// The trace id asked for.
    pub trace_id: String,
    /// Its spans: ids, parent, name, kind, start and duration (µs), attributes, links.
    #[schema(value_type = Vec<Object>)]
    pub spans: Vec<flashsale_telemetry::span_buffer::SpanRecord>,
}
