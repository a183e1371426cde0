//! The one rule for a test that needs a server (PostgreSQL, MariaDB, Redis, NATS) or a tool
//! (promtool) it cannot reach.
//!
//! On a developer's machine a missing server is no reason for a red suite: the test says why and
//! is skipped (it returns early, passing). Under `CI=true` every server is meant to be there, so a
//! missing one is a failure naming it — never a silent pass. [`required`] applies the rule to
//! the result of a connection attempt; [`skip_or_fail`] is the rule itself.

use std::fmt::Display;

/// The variable that says the tests run in CI, where every server must be reachable.
pub const CI_VAR: &str = "CI";

/// Whether the tests run in CI (`CI=true`).
pub fn under_ci() -> bool {
    std::env::var(CI_VAR).is_ok_and(|v| v == "true")
}

/// What a test does without its server.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Print this and skip.
    Skip(String),
    /// Fail with this.
    Fail(String),
}

fn verdict(ci: bool, server: &str, error: &dyn Display, remedy: &str) -> Verdict {
    if ci {
        Verdict::Fail(format!(
            "CI=true but {server} is unreachable: {error} ({remedy})"
        ))
    } else {
        Verdict::Skip(format!(
            "skipping: {server} is unreachable ({error}); {remedy}"
        ))
    }
}

/// The rule for a test that cannot reach `server` (named for people: "the PostgreSQL test
/// server", "promtool") because of `error`: under `CI=true` a panic naming both; elsewhere a
/// line on stderr saying why the test is skipped, and `remedy` (how to point the tests at a
/// server: "set FLASHSALE_TEST_REDIS_URL"). The caller skips the test when this returns.
///
/// # Panics
/// Under `CI=true`, always (reported at the caller's line).
#[track_caller]
pub fn skip_or_fail(server: &str, error: &dyn Display, remedy: &str) {
    match verdict(under_ci(), server, error, remedy) {
        Verdict::Fail(message) => panic!("{message}"),
        Verdict::Skip(message) => eprintln!("{message}"),
    }
}

/// The connection (or whatever `attempt` produced) when it succeeded; otherwise `None`, after
/// applying [`skip_or_fail`] to its error.
///
/// # Panics
/// Under `CI=true` when `attempt` failed (reported at the caller's line).
#[track_caller]
pub fn required<T, E: Display>(server: &str, attempt: Result<T, E>, remedy: &str) -> Option<T> {
    match attempt {
        Ok(value) => Some(value),
        Err(error) => {
            skip_or_fail(server, &error, remedy);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_ci_a_missing_server_is_a_skip_saying_why_and_how_to_fix_it() {
        let v = verdict(
            false,
            "Redis",
            &"connection refused",
            "set FLASHSALE_TEST_REDIS_URL",
        );
        assert_eq!(
            v,
            Verdict::Skip(
                "skipping: Redis is unreachable (connection refused); set FLASHSALE_TEST_REDIS_URL"
                    .into()
            )
        );
    }

    #[test]
    fn under_ci_a_missing_server_is_a_failure_naming_it() {
        let Verdict::Fail(message) = verdict(true, "the NATS test server", &"refused", "hint")
        else {
            panic!("under CI a missing server must fail");
        };
        assert!(
            message.contains("CI=true") && message.contains("the NATS test server"),
            "{message}"
        );
        assert!(message.contains("refused"), "{message}");
    }

    #[test]
    fn a_reached_server_is_handed_back() {
        assert_eq!(
            required("anything", Ok::<_, String>(7), "no remedy needed"),
            Some(7)
        );
    }
}
