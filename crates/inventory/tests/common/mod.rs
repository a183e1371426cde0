//! Shared by the inventory's integration tests: a fresh embedded database per test.
#![allow(clippy::unwrap_used, dead_code)]

use flashsale_storage::{connect, Durability, SqlitePool};

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
    (dir, db.as_sqlite().cloned().unwrap())
}
