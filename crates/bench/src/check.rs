//! The guarantee check, run after the orders settled: the facts are read from the database
//! (and the gateway's `remaining`), then judged by [`judge`], a pure function that is tested
//! with deliberately broken facts.

use std::collections::HashSet;

use serde::Serialize;

use crate::error::BenchError;

/// What was observed after the run.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Initial stock of the sale.
    pub stock: i64,
    /// Units all users wanted (users × limit).
    pub demand: i64,
    /// Per-user limit.
    pub limit: i64,
    /// Whether every user got a final answer (then exactly `min(stock, demand)` must be sold).
    pub settled: bool,
    /// Units in live orders (not cancelled or expired) of the sale.
    pub live_units: i64,
    /// Users holding more than `limit` units: (user id, units).
    pub over_limit: Vec<(i64, i64)>,
    /// (user id, idempotency key) pairs with more than one order.
    pub duplicate_keys: Vec<(i64, String)>,
    /// Order ids answered 202.
    pub accepted_ids: Vec<String>,
    /// Order ids in the database for the sale.
    pub stored_ids: HashSet<String>,
    /// The sale's `remaining` according to the gateway.
    pub remaining: i64,
}

/// The verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    /// No violation found.
    pub passed: bool,
    /// What was checked.
    pub checked: Vec<String>,
    /// What could not be checked (no database).
    pub skipped: Vec<String>,
    /// Violations, each saying which guarantee broke.
    pub violations: Vec<String>,
}

/// Judges the facts.
pub fn judge(f: &Facts) -> Vec<String> {
    let mut v = Vec::new();
    let expected = f.stock.min(f.demand);
    if f.settled && f.live_units != expected {
        v.push(format!(
            "sold {} units, expected exactly min(stock {}, demand {}) = {expected}",
            f.live_units, f.stock, f.demand
        ));
    }
    if f.live_units > f.stock {
        v.push(format!(
            "oversold: {} units of a stock of {}",
            f.live_units, f.stock
        ));
    }
    for (user, units) in &f.over_limit {
        v.push(format!(
            "user {user} holds {units} units, above the per-user limit {}",
            f.limit
        ));
    }
    for (user, key) in &f.duplicate_keys {
        v.push(format!(
            "user {user} has several orders for idempotency key {key:?}"
        ));
    }
    let unique: HashSet<&String> = f.accepted_ids.iter().collect();
    let missing = unique
        .iter()
        .filter(|id| !f.stored_ids.contains(**id))
        .count();
    if missing > 0 {
        v.push(format!(
            "{missing} order ids answered 202 are not in the database"
        ));
    }
    if f.remaining + f.live_units != f.stock {
        v.push(format!(
            "remaining {} + sold {} != stock {}",
            f.remaining, f.live_units, f.stock
        ));
    }
    v
}

/// Gathers the facts from the database at `database_url`.
pub async fn facts_from_db(
    database_url: &str,
    sale: i64,
    mut base: Facts,
) -> Result<Facts, BenchError> {
    let db =
        flashsale_storage::connect(database_url, flashsale_storage::Durability::Process, 2).await?;
    // Sums are added up here rather than in SQL: `SUM` is NUMERIC/DECIMAL on PostgreSQL and
    // MySQL, so one statement decodes alike on every engine.
    let live: Vec<(i64, i64)> = db
        .fetch_all(
            "SELECT user_id, quantity FROM orders WHERE sale_id = ? AND status NOT IN ('cancelled', 'expired')",
            &[sale.into()],
        )
        .await?;
    let mut per_user = std::collections::BTreeMap::<i64, i64>::new();
    for (user, quantity) in live {
        *per_user.entry(user).or_default() += quantity;
    }
    base.live_units = per_user.values().sum();
    base.over_limit = per_user
        .into_iter()
        .filter(|(_, units)| *units > base.limit)
        .collect();
    base.duplicate_keys = db
        .fetch_all(
            "SELECT user_id, idempotency_key FROM orders GROUP BY user_id, idempotency_key
             HAVING COUNT(*) > 1",
            &[],
        )
        .await?;
    let ids: Vec<(String,)> = db
        .fetch_all("SELECT id FROM orders WHERE sale_id = ?", &[sale.into()])
        .await?;
    base.stored_ids = ids.into_iter().map(|(id,)| id).collect();
    db.close().await;
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Facts {
        Facts {
            stock: 3,
            demand: 10,
            limit: 1,
            settled: true,
            live_units: 3,
            accepted_ids: vec!["a".into(), "b".into(), "c".into()],
            stored_ids: ["a", "b", "c"].iter().map(|s| s.to_string()).collect(),
            remaining: 0,
            ..Facts::default()
        }
    }

    #[test]
    fn consistent_facts_pass() {
        assert!(judge(&good()).is_empty());
    }

    #[test]
    fn an_extra_order_fails() {
        let mut f = good();
        f.live_units = 4;
        f.stored_ids.insert("d".into());
        let v = judge(&f);
        assert!(v.iter().any(|m| m.contains("expected exactly")), "{v:?}");
        assert!(v.iter().any(|m| m.contains("oversold")), "{v:?}");
        assert!(v.iter().any(|m| m.contains("remaining")), "{v:?}");
    }

    #[test]
    fn a_missing_order_fails() {
        let mut f = good();
        f.live_units = 2;
        f.remaining = 1;
        f.stored_ids.remove("c");
        let v = judge(&f);
        assert!(v.iter().any(|m| m.contains("expected exactly")), "{v:?}");
        assert!(v.iter().any(|m| m.contains("not in the database")), "{v:?}");
    }

    #[test]
    fn a_duplicate_key_fails() {
        let mut f = good();
        f.duplicate_keys.push((7, "k".into()));
        assert!(judge(&f).iter().any(|m| m.contains("idempotency key")));
    }

    #[test]
    fn a_user_over_the_limit_fails() {
        let mut f = good();
        f.over_limit.push((7, 2));
        assert!(judge(&f)
            .iter()
            .any(|m| m.contains("above the per-user limit")));
    }

    #[test]
    fn unsettled_runs_only_need_consistency() {
        let mut f = good();
        f.settled = false;
        f.live_units = 2;
        f.remaining = 1;
        f.accepted_ids.pop();
        assert!(judge(&f).is_empty());
    }

    /// The SQL side: a real database (every engine) with deliberately broken rows.
    async fn broken_database_rows_are_found(t: flashsale_storage::testing::TestDatabase) {
        let rows = [
            // user 1 twice with one key (impossible under the UNIQUE constraint: see below),
            // user 2 over the limit with two keys, user 3 fine, user 4 cancelled (not live).
            ("o1", 1_i64, "k1", "created"),
            ("o2", 2, "k2", "created"),
            ("o3", 2, "k3", "paid"),
            ("o4", 3, "k4", "created"),
            ("o5", 4, "k5", "cancelled"),
        ];
        let insert = "INSERT INTO orders (id, user_id, sale_id, quantity, price_cents, idempotency_key,
             status, created_at_ms, updated_at_ms, expires_at_ms) VALUES (?, ?, 1, 1, 100, ?, ?, 0, 0, 0)";
        for (id, user, key, status) in rows {
            t.db.execute(insert, &[id.into(), user.into(), key.into(), status.into()])
                .await
                .unwrap();
        }
        // The schema forbids a duplicate (user, key): prove it.
        let dup =
            t.db.execute(
                insert,
                &["o6".into(), 1_i64.into(), "k1".into(), "created".into()],
            )
            .await;
        assert!(
            dup.as_ref()
                .is_err_and(flashsale_storage::is_unique_violation),
            "the UNIQUE constraint should refuse a duplicate key: {dup:?}"
        );

        let base = Facts {
            stock: 3,
            demand: 10,
            limit: 1,
            settled: true,
            accepted_ids: vec!["o1".into(), "o2".into(), "o9".into()],
            remaining: 0,
            ..Facts::default()
        };
        let f = facts_from_db(&t.url, 1, base).await.unwrap();
        assert_eq!(f.live_units, 4);
        assert_eq!(f.over_limit, vec![(2, 2)]);
        assert!(f.duplicate_keys.is_empty());
        let v = judge(&f);
        assert!(v.iter().any(|m| m.contains("oversold")), "{v:?}");
        assert!(
            v.iter().any(|m| m.contains("user 2 holds 2 units")),
            "{v:?}"
        );
        assert!(
            v.iter().any(|m| m.contains("1 order ids answered 202")),
            "{v:?}"
        );
    }

    flashsale_storage::on_every_engine!(schemas = [flashsale_order::schema]; broken_database_rows_are_found);
}
