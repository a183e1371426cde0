//! Ids that cross service boundaries, as distinct types.
//!
//! On the wire (JSON, protobuf, SQL) they are plain integers and strings; inside Rust a
//! [`SaleId`] is not a [`UserId`], so swapping two arguments is a compile error, not a
//! reservation for the wrong buyer.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<i64> for $name {
            fn from(id: i64) -> Self {
                Self(id)
            }
        }

        impl From<$name> for i64 {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

int_id!(
    /// A user (the `users` table's key, the token's `sub`).
    UserId
);
int_id!(
    /// A sale (the `sales` table's key).
    SaleId
);

/// An order: a UUID in its hyphenated text form, derived by the gateway from the buyer and the
/// `Idempotency-Key`, so every retry of one buy names the same order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(pub String);

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<String> for OrderId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl AsRef<str> for OrderId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_values_on_the_wire() {
        assert_eq!(serde_json::to_string(&SaleId(7)).unwrap(), "7");
        assert_eq!(serde_json::from_str::<UserId>("42").unwrap(), UserId(42));
        assert_eq!(
            serde_json::to_string(&OrderId("a-b".into())).unwrap(),
            "\"a-b\""
        );
        assert_eq!(SaleId(3).to_string(), "3");
        assert_eq!(i64::from(UserId(9)), 9);
    }
}
