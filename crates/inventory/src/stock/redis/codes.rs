//! The outcome codes the stock scripts answer with, defined once, here, for both sides.
//!
//! Each code set is an `i64` enum ([`codes!`]). Lua sees the codes by name: every script runs
//! after a preamble of `local NAME = code` lines built from the enum it answers with
//! ([`preamble`]), so the `.lua` files say `return {SOLD_OUT, remaining}`, never a number.
//! Rust reads the reply back into the enum ([`::redis::FromRedisValue`]): a code the enum does
//! not declare is a parse error (a [`::redis::RedisError`]), never a panic nor a guess.
//!
//! The preamble is a pure function of these definitions, so a script's text, and with it its
//! SHA1 (EVALSHA), is the same in every process of one build.

use std::fmt::Write as _;

use ::redis::{FromRedisValue, ParsingError, Value};

/// A set of outcome codes one or more scripts answer with.
pub(super) trait Code: Copy + Sized + 'static {
    /// Every code of the set, in declaration order.
    const ALL: &'static [Self];
    /// The code's name in Lua (an upper-case Lua identifier).
    fn lua_name(self) -> &'static str;
    /// The code's value on the wire.
    fn code(self) -> i64;
    /// The code of this value, `None` when the set has none.
    fn from_code(code: i64) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.code() == code)
    }
}

/// Reads a code out of a script's reply: an integer (or its decimal string) the set declares.
pub(super) fn decode<C: Code>(set: &str, value: &Value) -> Result<C, ParsingError> {
    let code = i64::from_redis_value_ref(value)?;
    C::from_code(code).ok_or_else(|| format!("{set}: unknown outcome code {code}").into())
}

/// Declares a code set: an `i64` enum, each variant with its value and its Lua name, that
/// implements [`Code`] and [`FromRedisValue`].
macro_rules! codes {
    (
        $(#[$meta:meta])*
        enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal => $lua:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(i64)]
        pub(super) enum $name {
            $( $(#[$vmeta])* $variant = $code, )+
        }

        impl Code for $name {
            const ALL: &'static [Self] = &[$(Self::$variant),+];

            fn lua_name(self) -> &'static str {
                match self {
                    $(Self::$variant => $lua,)+
                }
            }

            fn code(self) -> i64 {
                self as i64
            }
        }

        impl FromRedisValue for $name {
            fn from_redis_value_ref(value: &Value) -> Result<Self, ParsingError> {
                decode(stringify!($name), value)
            }

            fn from_redis_value(value: Value) -> Result<Self, ParsingError> {
                decode(stringify!($name), &value)
            }
        }
    };
}

codes! {
    /// What `reserve.lua` decided (first element of its `{code, remaining}`).
    enum ReserveCode {
        /// The sale is not tracked (not ready).
        NotFound = 0 => "NOT_FOUND",
        /// Stock was taken.
        Reserved = 1 => "RESERVED",
        /// The order id holds this reservation already (or was released: spent).
        AlreadyReserved = 2 => "ALREADY_RESERVED",
        /// Not enough stock left.
        SoldOut = 3 => "SOLD_OUT",
        /// The buyer would exceed the per-user limit.
        LimitReached = 4 => "LIMIT_REACHED",
        /// Before the sale's window.
        NotStarted = 5 => "NOT_STARTED",
        /// After the sale's window.
        Ended = 6 => "ENDED",
        /// The order id holds a different reservation.
        Conflict = 7 => "CONFLICT",
    }
}

codes! {
    /// What `release.lua` did.
    enum ReleaseCode {
        /// Nothing given back: released before, or no hold of the current build (remembered).
        NothingGivenBack = 0 => "NOTHING_GIVEN_BACK",
        /// The hold's stock was given back (the first release of a held reservation).
        Released = 1 => "RELEASED",
    }
}

codes! {
    /// What `void.lua` did.
    enum VoidCode {
        /// The hold stays (confirmed, released, or touched after the cutoff).
        Kept = 0 => "KEPT",
        /// The hold was dropped (its stock given back if it was of the current build).
        Voided = 1 => "VOIDED",
    }
}

codes! {
    /// What `confirm.lua` answers (the caller ignores it).
    enum ConfirmCode {
        /// The holds were marked confirmed.
        Confirmed = 0 => "CONFIRMED",
    }
}

codes! {
    /// What `load_begin.lua` answers when it hands out no generation (a positive reply is the
    /// new build's generation).
    enum ClaimCode {
        /// The sale is built already: nothing to do.
        AlreadyBuilt = 0 => "ALREADY_BUILT",
        /// Another load holds the claim: wait for it.
        BuildInProgress = -1 => "BUILD_IN_PROGRESS",
        /// A built sale of this id has another limit or window: another database's sale.
        OtherSale = -2 => "OTHER_SALE",
    }
}

codes! {
    /// What `load_chunk.lua` and `load_finish.lua` answer (the latter as `{code, remaining}`).
    enum LoadStepCode {
        /// The load's claim was taken over: nothing written.
        ClaimLost = 0 => "CLAIM_LOST",
        /// The step was written.
        Done = 1 => "STEP_DONE",
    }
}

codes! {
    /// What `audit.lua` answers (first element of its reply).
    enum AuditCode {
        /// The sale was built without the `holds` set: it cannot be audited.
        NoHoldsSet = -1 => "NO_HOLDS_SET",
        /// The sale is not tracked (not ready).
        NotReady = 0 => "NOT_READY",
        /// Audited (and repaired if asked): the rest of the reply is the audit.
        Audited = 1 => "AUDITED",
    }
}

codes! {
    /// What `adopt.lua` did.
    enum AdoptCode {
        /// The sale is not tracked (not ready): nothing changed.
        NotTracked = 0 => "NOT_TRACKED",
        /// The order now holds its units.
        Adopted = 1 => "ADOPTED",
        /// The order id holds exactly this already.
        AlreadyHeld = 2 => "ALREADY_HELD",
        /// The order id holds something else: nothing changed.
        Conflict = 3 => "CONFLICT",
    }
}

/// `local NAME = code` for every code of `C`, one a line: what a script answering with `C`
/// runs first.
pub(super) fn preamble<C: Code>() -> String {
    C::ALL.iter().fold(String::new(), |mut lua, c| {
        let _ = writeln!(lua, "local {} = {}", c.lua_name(), c.code());
        lua
    })
}

/// The full text of a script answering with `C`: the preamble of `C`, then `parts` in order.
pub(super) fn script_text<C: Code>(parts: &[&str]) -> String {
    let mut text = preamble::<C>();
    for part in parts {
        text.push_str(part);
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Checks one code set: each code is in the preamble by name, names and values are
    /// distinct Lua identifiers, each decodes back to itself, and one it lacks is an error.
    fn check<C: Code + FromRedisValue + PartialEq + std::fmt::Debug>() {
        let lua = preamble::<C>();
        let lines: HashSet<&str> = lua.lines().collect();
        let mut names = HashSet::new();
        let mut values = HashSet::new();
        for &c in C::ALL {
            let name = c.lua_name();
            assert!(
                lines.contains(format!("local {name} = {}", c.code()).as_str()),
                "{name} missing from the preamble:\n{lua}"
            );
            assert!(
                !name.is_empty() && name.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'),
                "{name} is not an upper-case Lua name"
            );
            assert!(names.insert(name), "{name} declared twice");
            assert!(values.insert(c.code()), "{} used twice", c.code());
            assert_eq!(C::from_code(c.code()), Some(c));
            assert_eq!(C::from_redis_value(Value::Int(c.code())).ok(), Some(c));
            let text = Value::BulkString(c.code().to_string().into_bytes());
            assert_eq!(C::from_redis_value(text).ok(), Some(c));
        }
        assert_eq!(
            lines.len(),
            C::ALL.len(),
            "the preamble declares only codes"
        );
        let unknown = (-10..=10).find(|v| !values.contains(v)).unwrap_or(i64::MAX);
        assert_eq!(C::from_code(unknown), None);
        assert!(C::from_redis_value(Value::Int(unknown)).is_err());
        assert!(C::from_redis_value(Value::Int(i64::MIN)).is_err());
        assert!(C::from_redis_value(Value::Nil).is_err());
        assert!(C::from_redis_value(Value::BulkString(b"sold".to_vec())).is_err());
    }

    #[test]
    fn every_code_is_named_in_its_preamble_and_unknown_codes_are_errors() {
        check::<ReserveCode>();
        check::<ReleaseCode>();
        check::<VoidCode>();
        check::<ConfirmCode>();
        check::<ClaimCode>();
        check::<LoadStepCode>();
        check::<AuditCode>();
        check::<AdoptCode>();
    }

    #[test]
    fn a_script_is_its_preamble_then_its_parts() {
        let text = script_text::<VoidCode>(&["-- a\n", "return KEPT\n"]);
        assert_eq!(
            text,
            "local KEPT = 0\nlocal VOIDED = 1\n-- a\nreturn KEPT\n"
        );
        let compile = || ::redis::Script::new(&script_text::<VoidCode>(&["return KEPT\n"]));
        assert_eq!(
            compile().get_hash(),
            compile().get_hash(),
            "same text, same SHA1"
        );
    }
}
