//! The SQL user store on every real database engine (SQLite, PostgreSQL, MariaDB/MySQL — one
//! suite, each test on a database of its own): an email is taken once, exactly as written
//! (byte-wise: MySQL's default case-insensitive collation must not leak in), and updates stick.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use flashsale_auth::store::{Role, SqlUserStore, UserStore};
use flashsale_storage::{on_every_engine, testing::TestDatabase};

on_every_engine!(schemas = [flashsale_auth::schema]; an_email_is_taken_once, updates_replace_hash_and_role);

async fn an_email_is_taken_once(t: TestDatabase) {
    let store = SqlUserStore::new(t.db.clone());
    let first = store
        .create("ann@example.com", "hash-1", Role::Customer)
        .await
        .unwrap()
        .expect("a new email is created");
    assert_eq!(
        store
            .create("ann@example.com", "hash-2", Role::Admin)
            .await
            .unwrap(),
        None,
        "a taken email is refused"
    );
    let other = store
        .create("Ann@example.com", "hash-3", Role::Customer)
        .await
        .unwrap()
        .expect("emails differing in case are different rows, as on every engine");
    assert_ne!(first, other);
    let ann = store
        .find_by_email("ann@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (ann.id, ann.password_hash.as_str(), ann.role),
        (first, "hash-1", Role::Customer)
    );
    assert!(store
        .find_by_email("bob@example.com")
        .await
        .unwrap()
        .is_none());
    assert_eq!(t.scalar("SELECT COUNT(*) FROM users").await, 2);
}

async fn updates_replace_hash_and_role(t: TestDatabase) {
    let store = SqlUserStore::new(t.db.clone());
    let id = store
        .create("admin@example.com", "old", Role::Customer)
        .await
        .unwrap()
        .unwrap();
    store.update(id, "new", Role::Admin).await.unwrap();
    let user = store
        .find_by_email("admin@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (user.id, user.password_hash.as_str(), user.role),
        (id, "new", Role::Admin)
    );
}
