-- MySQL/MariaDB twin of ../sqlite/3001_orders.sql. Keyed text is VARCHAR (InnoDB cannot index
-- TEXT whole; the service refuses order ids over 64 and idempotency keys over 255 bytes). The
-- idempotency key is utf8mb4_bin, comparing bytes as SQLite and PostgreSQL do (two keys that
-- differ in case are two orders). Order ids compare case-insensitively here, which is why the
-- service accepts only lowercase ids (the gateway's UUIDs). Indexes are declared in the tables
-- (MySQL has no CREATE INDEX IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS orders (
    id              VARCHAR(64)  NOT NULL PRIMARY KEY,
    user_id         BIGINT       NOT NULL,
    sale_id         BIGINT       NOT NULL,
    quantity        BIGINT       NOT NULL,
    price_cents     BIGINT       NOT NULL,
    idempotency_key VARCHAR(255) COLLATE utf8mb4_bin NOT NULL,
    status          VARCHAR(16)  NOT NULL,
    version         BIGINT       NOT NULL DEFAULT 0,
    created_at_ms   BIGINT       NOT NULL,
    updated_at_ms   BIGINT       NOT NULL,
    expires_at_ms   BIGINT       NOT NULL,
    stock_released  BIGINT       NOT NULL DEFAULT 0,
    UNIQUE KEY orders_by_idempotency_key (user_id, idempotency_key),
    KEY orders_by_user (user_id, created_at_ms),
    KEY orders_by_sale (sale_id),
    KEY orders_to_expire (status, expires_at_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_general_ci;

CREATE TABLE IF NOT EXISTS order_queue (
    order_id        VARCHAR(64)  NOT NULL PRIMARY KEY,
    user_id         BIGINT       NOT NULL,
    sale_id         BIGINT       NOT NULL,
    quantity        BIGINT       NOT NULL,
    price_cents     BIGINT       NOT NULL,
    idempotency_key VARCHAR(255) NOT NULL,
    accepted_at_ms  BIGINT       NOT NULL,
    traceparent     VARCHAR(55)  NULL,
    KEY order_queue_by_user (user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_general_ci;
