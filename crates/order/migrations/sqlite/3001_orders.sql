-- Orders of the order service, and the journal of its embedded queue. (IF NOT EXISTS: a database
-- created before each service owned its tables already has them, from the shared set 0001-0003;
-- this migration then only records itself.)

-- One order per (user, idempotency key).
CREATE TABLE IF NOT EXISTS orders (
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
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, created_at_ms);
CREATE INDEX IF NOT EXISTS orders_by_sale ON orders (sale_id);
CREATE INDEX IF NOT EXISTS orders_to_expire ON orders (status, expires_at_ms);

-- Durable journal of the embedded order queue: an accepted order request lives here from the
-- moment it is answered 202 until the consumer has written it to `orders`. `traceparent` is the
-- accepting request's trace context, so the consumer's span can link to it.
CREATE TABLE IF NOT EXISTS order_queue (
    order_id        TEXT    PRIMARY KEY,
    user_id         INTEGER NOT NULL,
    sale_id         INTEGER NOT NULL,
    quantity        INTEGER NOT NULL,
    price_cents     INTEGER NOT NULL,
    idempotency_key TEXT    NOT NULL,
    accepted_at_ms  INTEGER NOT NULL,
    traceparent     TEXT    NULL
);
-- Lets a user's still-queued order requests be listed (GET /orders shows them as pending).
CREATE INDEX IF NOT EXISTS order_queue_by_user ON order_queue (user_id);
