//! Shared by the inventory's integration tests: a fresh embedded database per test, and a
//! fresh Redis prefix cleaned up after the test.
#![allow(clippy::unwrap_used, dead_code)]

use std::future::Future;

use flashsale_redis::testing::TestRedis;
use flashsale_storage::{connect, Durability, SqlitePool};

/// Runs `case` on a fresh Redis prefix, then deletes the prefix's keys (also when the case
/// fails, whose panic is then passed on). Skips (see [`TestRedis::start`]) without a server.
pub async fn with_redis<F, Fut>(case: F)
where
    F: FnOnce(TestRedis) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(test) = TestRedis::start().await else {
        return;
    };
    let outcome = tokio::spawn(case(test.clone())).await;
    test.cleanup().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A migrated SQLite database in a temporary directory (deleted with the returned guard).
pub async fn database() -> (tempfile::TempDir, SqlitePool) {
    let dir = tempfile::tempdir().unwrap();
    let db = connect(
        &format!("sqlite://{}", dir.path().join("t.db").display()),
        Durability::Process,
        2,
    )
    .await
    .unwrap();
    db.migrate(flashsale_inventory::schema).await.unwrap();
    db.migrate(flashsale_order::schema).await.unwrap();
    (dir, db.as_sqlite().cloned().unwrap())
}
