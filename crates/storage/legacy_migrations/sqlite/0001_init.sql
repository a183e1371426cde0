-- Users of the auth service.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL DEFAULT 'customer',
    created_at_ms INTEGER NOT NULL
);

-- Sales of the inventory service. `stock` is the initial stock; what is left is derived
-- from the orders (the database is the truth; the in-memory counters are a cache of it).
CREATE TABLE sales (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT    NOT NULL,
    price_cents    INTEGER NOT NULL,
    stock          INTEGER NOT NULL,
    per_user_limit INTEGER NOT NULL,
    starts_at_ms   INTEGER NOT NULL,
    ends_at_ms     INTEGER NOT NULL,
    created_at_ms  INTEGER NOT NULL
);

-- Orders of the order service. One order per (user, idempotency key).
CREATE TABLE orders (
    id              TEXT    PRIMARY KEY,
    user_id         INTEGER NOT NULL,
    sale_id         INTEGER NOT NULL,
    quantity        INTEGER NOT NULL,
    price_cents     INTEGER NOT NULL,
    idempotency_key TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    version         INTEGER NOT NULL DEFAULT 0,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    -- 1 once the stock of a cancelled/expired order went back to the sale.
    stock_released  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX orders_by_user ON orders (user_id, created_at_ms);
CREATE INDEX orders_by_sale ON orders (sale_id);
CREATE INDEX orders_to_expire ON orders (status, expires_at_ms);

-- Durable journal of the embedded order queue: an accepted order request lives here from the
-- moment it is answered 202 until the consumer has written it to `orders`.
CREATE TABLE order_queue (
    order_id        TEXT    PRIMARY KEY,
    user_id         INTEGER NOT NULL,
    sale_id         INTEGER NOT NULL,
    quantity        INTEGER NOT NULL,
    price_cents     INTEGER NOT NULL,
    idempotency_key TEXT    NOT NULL,
    accepted_at_ms  INTEGER NOT NULL
);
