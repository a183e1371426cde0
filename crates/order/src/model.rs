//! Orders, order requests and the order state machine.

/// Where an order is in its life.
///
/// ```text
/// pending ──persisted──▶ created ──pay──▶ paid
///                           ├──cancel──▶ cancelled   (stock released)
///                           └──timeout─▶ expired     (stock released)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// Accepted and queued, not yet written to the order table.
    Pending,
    /// Written, waiting for payment.
    Created,
    /// Paid: final.
    Paid,
    /// Cancelled by the buyer: final, stock released.
    Cancelled,
    /// Not paid in time: final, stock released.
    Expired,
}

impl OrderStatus {
    /// The name stored in the database and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Created => "created",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "created" => Self::Created,
            "paid" => Self::Paid,
            "cancelled" => Self::Cancelled,
            "expired" => Self::Expired,
            _ => return None,
        })
    }

    /// Whether the state machine allows `self → to`.
    pub fn can_become(self, to: Self) -> bool {
        matches!(
            (self, to),
            (Self::Pending, Self::Created)
                | (Self::Created, Self::Paid | Self::Cancelled | Self::Expired)
        )
    }

    /// Whether reaching this state gives the stock back.
    pub fn releases_stock(self) -> bool {
        matches!(self, Self::Cancelled | Self::Expired)
    }
}

/// An accepted buy, as queued (serialised as JSON on the NATS queue).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderRequest {
    /// Order id (UUID text).
    pub order_id: String,
    /// Buyer.
    pub user_id: i64,
    /// Sale.
    pub sale_id: i64,
    /// Units.
    pub quantity: i64,
    /// Unit price in cents at acceptance.
    pub price_cents: i64,
    /// The buyer's idempotency key.
    pub idempotency_key: String,
    /// Acceptance time, Unix ms.
    pub accepted_at_ms: i64,
    /// The span that accepted it, when traces are recorded: the consumer's span links to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<flashsale_telemetry::TraceContext>,
}

/// A stored (or pending) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Order id.
    pub id: String,
    /// Buyer.
    pub user_id: i64,
    /// Sale.
    pub sale_id: i64,
    /// Units.
    pub quantity: i64,
    /// Unit price in cents.
    pub price_cents: i64,
    /// State.
    pub status: OrderStatus,
    /// Optimistic-locking version, bumped by every transition.
    pub version: i64,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms.
    pub updated_at_ms: i64,
    /// When an unpaid order expires, Unix ms.
    pub expires_at_ms: i64,
}

impl Order {
    /// The view of a request still in the queue.
    pub fn pending(req: &OrderRequest) -> Self {
        Self {
            id: req.order_id.clone(),
            user_id: req.user_id,
            sale_id: req.sale_id,
            quantity: req.quantity,
            price_cents: req.price_cents,
            status: OrderStatus::Pending,
            version: 0,
            created_at_ms: req.accepted_at_ms,
            updated_at_ms: req.accepted_at_ms,
            expires_at_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;

    #[test]
    fn state_machine_allows_only_the_documented_steps() {
        let all = [Pending, Created, Paid, Cancelled, Expired];
        let allowed = [
            (Pending, Created),
            (Created, Paid),
            (Created, Cancelled),
            (Created, Expired),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
            assert_eq!(super::OrderStatus::parse(from.as_str()), Some(from));
        }
        assert!(Cancelled.releases_stock() && Expired.releases_stock() && !Paid.releases_stock());
    }
}
