//! The sale model and the rules a new sale must satisfy.

/// A sale as stored: its item, price, initial stock, window and per-user limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    /// Id.
    pub id: i64,
    /// Item name.
    pub name: String,
    /// Unit price in cents.
    pub price_cents: i64,
    /// Initial stock.
    pub stock: i64,
    /// Most units one user may hold across their live orders.
    pub per_user_limit: i64,
    /// Opening time, Unix ms.
    pub starts_at_ms: i64,
    /// Closing time, Unix ms.
    pub ends_at_ms: i64,
}

impl Sale {
    /// The sale as the API shows it, with `remaining` units left.
    pub fn to_pb(&self, remaining: i64) -> flashsale_proto::inventory::Sale {
        flashsale_proto::inventory::Sale {
            id: self.id,
            name: self.name.clone(),
            price_cents: self.price_cents,
            stock: self.stock,
            remaining,
            per_user_limit: self.per_user_limit,
            starts_at_ms: self.starts_at_ms,
            ends_at_ms: self.ends_at_ms,
        }
    }
}

/// A sale to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSale {
    /// Item name, 1 to 200 characters.
    pub name: String,
    /// Unit price in cents, 0 to 10^12.
    pub price_cents: i64,
    /// Initial stock, 1 to 10^9.
    pub stock: i64,
    /// Per-user limit, 1 to `stock`.
    pub per_user_limit: i64,
    /// Opening time, Unix ms.
    pub starts_at_ms: i64,
    /// Closing time, Unix ms, after the opening.
    pub ends_at_ms: i64,
}

/// Largest stock a sale may have.
pub const MAX_STOCK: i64 = 1_000_000_000;
/// Largest price in cents.
pub const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;

impl NewSale {
    /// Checks the sale; the error is a message safe to show the admin.
    pub fn validate(&self) -> Result<(), &'static str> {
        let name_len = self.name.trim().chars().count();
        if name_len == 0 || name_len > 200 {
            return Err("name must be 1 to 200 characters");
        }
        if !(0..=MAX_PRICE_CENTS).contains(&self.price_cents) {
            return Err("price_cents must be between 0 and 1000000000000");
        }
        if !(1..=MAX_STOCK).contains(&self.stock) {
            return Err("stock must be between 1 and 1000000000");
        }
        if !(1..=self.stock).contains(&self.per_user_limit) {
            return Err("per_user_limit must be between 1 and stock");
        }
        if self.ends_at_ms <= self.starts_at_ms {
            return Err("ends_at must be after starts_at");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> NewSale {
        NewSale {
            name: "phone".into(),
            price_cents: 9900,
            stock: 10,
            per_user_limit: 2,
            starts_at_ms: 0,
            ends_at_ms: 1,
        }
    }

    #[test]
    fn accepts_a_sane_sale_and_refuses_each_bad_field() {
        assert!(good().validate().is_ok());
        let bad = [
            NewSale {
                name: " ".into(),
                ..good()
            },
            NewSale {
                price_cents: -1,
                ..good()
            },
            NewSale { stock: 0, ..good() },
            NewSale {
                stock: MAX_STOCK + 1,
                ..good()
            },
            NewSale {
                per_user_limit: 0,
                ..good()
            },
            NewSale {
                per_user_limit: 11,
                ..good()
            },
            NewSale {
                ends_at_ms: 0,
                ..good()
            },
        ];
        for sale in bad {
            assert!(sale.validate().is_err(), "{sale:?} accepted");
        }
    }
}
