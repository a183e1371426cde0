//! The stock scripts: each one's Lua (a `.lua` file beside this one, compiled in), the named
//! codes it answers with prepended as a preamble ([`super::codes`]), and their compilation into
//! [`Scripts`] (SHA1s computed once). The reserve script's answer becomes a [`ReserveDecision`]
//! here too, so every code meets its outcome in one place.

use ::redis::Script;

use super::codes::{
    script_text, AdoptCode, AuditCode, ClaimCode, ConfirmCode, LoadStepCode, ReleaseCode,
    ReserveCode, VoidCode,
};
use crate::stock::{ReserveDecision, ReserveOutcome};

/// Lua shared by the scripts that give stock back: the function `give_back`, prepended to
/// [`RELEASE`] and [`VOID`].
pub(super) const GIVE_BACK: &str = include_str!("give_back.lua");

/// Decides a buy: `{`[`ReserveCode`]`, remaining}`; publishes `sold_out:<id>`.
pub(super) const RESERVE: &str = include_str!("reserve.lua");

/// Gives a held reservation back, or remembers the release: a [`ReleaseCode`].
pub(super) const RELEASE: &str = include_str!("release.lua");

/// Drops an unconfirmed (or, asked so, any) unreleased hold untouched since a cutoff: a
/// [`VoidCode`].
pub(super) const VOID: &str = include_str!("void.lua");

/// Marks holds confirmed: [`ConfirmCode::Confirmed`].
pub(super) const CONFIRM: &str = include_str!("confirm.lua");

/// Claims a sale for building: the new generation, or a [`ClaimCode`].
pub(super) const LOAD_BEGIN: &str = include_str!("load_begin.lua");

/// Writes a chunk of stored reservations into a sale being built: a [`LoadStepCode`].
pub(super) const LOAD_CHUNK_SCRIPT: &str = include_str!("load_chunk.lua");

/// Makes a built sale visible: `{`[`LoadStepCode`]`, remaining}`.
pub(super) const LOAD_FINISH: &str = include_str!("load_finish.lua");

/// Checks (and optionally repairs) a sale's counters against its live holds:
/// `{`[`AuditCode`]`, remaining before, remaining after, users, holds}`.
pub(super) const AUDIT: &str = include_str!("audit.lua");

/// Makes an order a live, confirmed hold of a sale unless it holds stock already: an
/// [`AdoptCode`].
pub(super) const ADOPT: &str = include_str!("adopt.lua");

/// The reserve script's answer as a decision.
pub(super) fn decision((code, remaining): (ReserveCode, i64)) -> ReserveDecision {
    let outcome = match code {
        ReserveCode::NotFound => ReserveOutcome::NotFound,
        ReserveCode::Reserved => ReserveOutcome::Reserved,
        ReserveCode::AlreadyReserved => ReserveOutcome::AlreadyReserved,
        ReserveCode::SoldOut => ReserveOutcome::SoldOut,
        ReserveCode::LimitReached => ReserveOutcome::LimitReached,
        ReserveCode::NotStarted => ReserveOutcome::NotStarted,
        ReserveCode::Ended => ReserveOutcome::Ended,
        ReserveCode::Conflict => ReserveOutcome::Conflict,
    };
    ReserveDecision { outcome, remaining }
}

/// The compiled scripts (their SHA1s are computed once, here).
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) reserve: Script,
    pub(super) release: Script,
    pub(super) void: Script,
    pub(super) confirm: Script,
    pub(super) load_begin: Script,
    pub(super) load_chunk: Script,
    pub(super) load_finish: Script,
    pub(super) audit: Script,
    pub(super) adopt: Script,
}

impl Scripts {
    /// Every script's name and full text (its codes' preamble, then its Lua), in field order.
    pub(super) fn texts() -> [(&'static str, String); 9] {
        [
            ("reserve", script_text::<ReserveCode>(&[RESERVE])),
            ("release", script_text::<ReleaseCode>(&[GIVE_BACK, RELEASE])),
            ("void", script_text::<VoidCode>(&[GIVE_BACK, VOID])),
            ("confirm", script_text::<ConfirmCode>(&[CONFIRM])),
            ("load_begin", script_text::<ClaimCode>(&[LOAD_BEGIN])),
            (
                "load_chunk",
                script_text::<LoadStepCode>(&[LOAD_CHUNK_SCRIPT]),
            ),
            ("load_finish", script_text::<LoadStepCode>(&[LOAD_FINISH])),
            ("audit", script_text::<AuditCode>(&[AUDIT])),
            ("adopt", script_text::<AdoptCode>(&[ADOPT])),
        ]
    }

    /// Compiles [`Scripts::texts`].
    pub(super) fn new() -> Self {
        let [reserve, release, void, confirm, load_begin, load_chunk, load_finish, audit, adopt] =
            Self::texts().map(|(_, text)| Script::new(&text));
        Self {
            reserve,
            release,
            void,
            confirm,
            load_begin,
            load_chunk,
            load_finish,
            audit,
            adopt,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stock::redis::codes::Code as _;

    /// A script's text split into the code names its preamble declares and its Lua.
    fn split(text: &str) -> (Vec<&str>, &str) {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(line) = rest.strip_prefix("local ") {
            let (line, after) = line.split_once('\n').unwrap_or((line, ""));
            let Some((name, code)) = line.split_once(" = ") else {
                break;
            };
            if code.parse::<i64>().is_err() {
                break;
            }
            names.push(name);
            rest = after;
        }
        (names, rest)
    }

    /// The Lua code without its comments and its string literals (the scripts quote with `'`).
    fn code_only(lua: &str) -> String {
        lua.lines()
            .map(|line| {
                let mut out = String::new();
                let mut quoted = false;
                let mut chars = line.chars().peekable();
                while let Some(c) = chars.next() {
                    if c == '\'' {
                        quoted = !quoted;
                    } else if !quoted && c == '-' && chars.peek() == Some(&'-') {
                        break;
                    } else if !quoted {
                        out.push(c);
                    }
                }
                out
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The upper-case identifiers the code uses (`KEYS`, `ARGV` and code names).
    fn upper_case_names(code: &str) -> Vec<&str> {
        code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with(|c: char| c.is_ascii_uppercase()))
            .filter(|w| w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect()
    }

    #[test]
    fn scripts_answer_with_the_names_their_preamble_declares_never_numbers() {
        for (script, text) in Scripts::texts() {
            let (declared, lua) = split(&text);
            assert!(!declared.is_empty(), "{script}: no codes preamble");
            let code = code_only(lua);
            let used = upper_case_names(&code);
            for name in &used {
                assert!(
                    ["KEYS", "ARGV"].contains(name) || declared.contains(name),
                    "{script} uses {name}, which its preamble does not declare"
                );
            }
            for name in &declared {
                assert!(used.contains(name), "{script} never answers {name}");
            }
            for answer in code.split("return").skip(1) {
                let answer = answer.trim_start().trim_start_matches('{').trim_start();
                assert!(
                    !answer.starts_with(|c: char| c.is_ascii_digit() || c == '-'),
                    "{script} answers a bare number: return {answer:.20}"
                );
            }
        }
    }

    #[test]
    fn every_script_file_has_a_header() {
        for (script, lua) in [
            ("reserve", RESERVE),
            ("release", RELEASE),
            ("void", VOID),
            ("confirm", CONFIRM),
            ("load_begin", LOAD_BEGIN),
            ("load_chunk", LOAD_CHUNK_SCRIPT),
            ("load_finish", LOAD_FINISH),
            ("audit", AUDIT),
            ("adopt", ADOPT),
        ] {
            let header: Vec<&str> = lua.lines().take_while(|l| l.starts_with("--")).collect();
            assert!(
                header
                    .first()
                    .is_some_and(|l| l.starts_with(&format!("-- {script}: "))),
                "{script}.lua: header should start by naming the script"
            );
            for part in ["-- KEYS: ", "-- ARGV: ", "-- Returns "] {
                assert!(
                    header.iter().any(|l| l.starts_with(part)),
                    "{script}.lua: header lacks {part:?}"
                );
            }
        }
        assert!(GIVE_BACK.starts_with("-- give_back("));
    }

    #[test]
    fn every_reserve_code_is_a_distinct_outcome() {
        let outcomes: Vec<_> = ReserveCode::ALL
            .iter()
            .map(|&code| decision((code, 5)).outcome)
            .collect();
        for (i, outcome) in outcomes.iter().enumerate() {
            assert!(!outcomes[..i].contains(outcome), "{outcome:?} twice");
        }
        assert_eq!(outcomes.len(), 8, "one code per ReserveOutcome");
    }
}
