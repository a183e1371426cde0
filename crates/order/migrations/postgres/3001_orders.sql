-- PostgreSQL twin of ../sqlite/3001_orders.sql (BIGINT integers).
CREATE TABLE IF NOT EXISTS orders (
    id              TEXT   PRIMARY KEY,
    user_id         BIGINT NOT NULL,
    sale_id         BIGINT NOT NULL,
    quantity        BIGINT NOT NULL,
    price_cents     BIGINT NOT NULL,
    idempotency_key TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    version         BIGINT NOT NULL DEFAULT 0,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL,
    expires_at_ms   BIGINT NOT NULL,
    stock_released  BIGINT NOT NULL DEFAULT 0,
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, created_at_ms);
CREATE INDEX IF NOT EXISTS orders_by_sale ON orders (sale_id);
CREATE INDEX IF NOT EXISTS orders_to_expire ON orders (status, expires_at_ms);

CREATE TABLE IF NOT EXISTS order_queue (
    order_id        TEXT   PRIMARY KEY,
    user_id         BIGINT NOT NULL,
    sale_id         BIGINT NOT NULL,
    quantity        BIGINT NOT NULL,
    price_cents     BIGINT NOT NULL,
    idempotency_key TEXT   NOT NULL,
    accepted_at_ms  BIGINT NOT NULL,
    traceparent     TEXT   NULL
);
CREATE INDEX IF NOT EXISTS order_queue_by_user ON order_queue (user_id);
