-- Users of the auth service. (IF NOT EXISTS: a database created before each service owned its
-- tables already has it, from the shared set 0001; this migration then only records itself.)
CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL DEFAULT 'customer',
    created_at_ms INTEGER NOT NULL
);
