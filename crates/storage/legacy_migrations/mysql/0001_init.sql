-- MySQL/MariaDB twin of ../sqlite/0001_init.sql: the same tables, keys and indexes. Every integer
-- is BIGINT (the services read and write i64). Keyed text is VARCHAR (InnoDB cannot index TEXT
-- whole); the services refuse longer values before they reach SQL (order id ≤ 64, idempotency
-- key ≤ 255, email ≤ 254 bytes). The two unique keys the users choose (email, idempotency key)
-- are utf8mb4_bin and compare bytes, as SQLite and PostgreSQL do: a case-insensitive collation
-- would make 'A@x' and 'a@x' one email, and two keys one order. (Both are never read back as
-- text: sqlx reports a _bin column as VARBINARY and refuses to decode it as a string.) Order ids
-- are compared case-insensitively here, which is why the order service accepts only lowercase
-- ids (the gateway's UUIDs).

-- Users of the auth service.
CREATE TABLE users (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    email         VARCHAR(255) COLLATE utf8mb4_bin NOT NULL UNIQUE,
    password_hash TEXT         NOT NULL,
    role          VARCHAR(32)  NOT NULL DEFAULT 'customer',
    created_at_ms BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_general_ci;

-- Sales of the inventory service. `stock` is the initial stock; what is left is derived
-- from the orders (the database is the truth; the in-memory counters are a cache of it).
CREATE TABLE sales (
    id             BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name           TEXT   NOT NULL,
    price_cents    BIGINT NOT NULL,
    stock          BIGINT NOT NULL,
    per_user_limit BIGINT NOT NULL,
    starts_at_ms   BIGINT NOT NULL,
    ends_at_ms     BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_general_ci;

-- Orders of the order service. One order per (user, idempotency key).
CREATE TABLE orders (
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
    -- 1 once the stock of a cancelled/expired order went back to the sale.
    stock_released  BIGINT       NOT NULL DEFAULT 0,
    UNIQUE KEY orders_by_idempotency_key (user_id, idempotency_key),
    KEY orders_by_user (user_id, created_at_ms),
    KEY orders_by_sale (sale_id),
    KEY orders_to_expire (status, expires_at_ms)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_general_ci;

-- Durable journal of the embedded order queue: an accepted order request lives here from the
-- moment it is answered 202 until the consumer has written it to `orders`.
CREATE TABLE order_queue (
    order_id        VARCHAR(64)  NOT NULL PRIMARY KEY,
    user_id         BIGINT       NOT NULL,
    sale_id         BIGINT       NOT NULL,
    quantity        BIGINT       NOT NULL,
    price_cents     BIGINT       NOT NULL,
    idempotency_key VARCHAR(255) NOT NULL,
    accepted_at_ms  BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_general_ci;
