//! What a buy asks for ([`BuyInput`]), the bounds its quantity must keep, and the order id it
//! names ([`order_id_for`]).
//!
//! The order id of a buy is derived from (user, `Idempotency-Key`) — a UUIDv5 — so every retry
//! of one request names the same order: the inventory reserves for it at most once and the
//! order queue and table keep it at most once.

use std::net::IpAddr;

use uuid::Uuid;

use super::outcome::Refusal;

/// Largest quantity a buy may ask for (the per-user limit usually binds first).
pub const MAX_QUANTITY: i64 = 1_000_000;

/// Namespace of order ids (UUIDv5 of `"{user_id}:{idempotency_key}"`).
const ORDER_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_51e2_9a3b_4f7d_8e21_5c4a_0b9d_3e77);

/// The order id for a user's idempotency key.
pub fn order_id_for(user_id: i64, key: &str) -> Uuid {
    Uuid::new_v5(&ORDER_NAMESPACE, format!("{user_id}:{key}").as_bytes())
}

/// One buy, as the HTTP adapter read it from the request.
#[derive(Debug, Clone)]
pub struct BuyInput {
    /// The authenticated buyer.
    pub user_id: i64,
    /// The buyer's address (through trusted proxies), for the per-IP limit.
    pub client_ip: IpAddr,
    /// The sale.
    pub sale_id: i64,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: String,
    /// Units asked for.
    pub quantity: i64,
    /// When the gateway accepted the request, Unix ms: compared with the sale's window here,
    /// and by the order queue, which refuses a buy accepted too long ago.
    pub accepted_at_ms: i64,
}

impl BuyInput {
    /// The order id this buy names.
    pub fn order_id(&self) -> Uuid {
        order_id_for(self.user_id, &self.idempotency_key)
    }

    /// Refuses a quantity outside `1..=MAX_QUANTITY`.
    pub fn check_quantity(&self) -> Result<(), Refusal> {
        if (1..=MAX_QUANTITY).contains(&self.quantity) {
            Ok(())
        } else {
            Err(Refusal::BadQuantity)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_and_key_always_name_the_same_order() {
        assert_eq!(order_id_for(1, "k"), order_id_for(1, "k"));
        assert_ne!(order_id_for(1, "k"), order_id_for(2, "k"));
        assert_ne!(order_id_for(1, "k"), order_id_for(1, "l"));
        // Ids already handed out must stay valid: the namespace never changes.
        assert_eq!(
            order_id_for(1, "k").to_string(),
            Uuid::new_v5(
                &Uuid::parse_str("6f1c51e2-9a3b-4f7d-8e21-5c4a0b9d3e77").unwrap(),
                b"1:k"
            )
            .to_string()
        );
    }
}
