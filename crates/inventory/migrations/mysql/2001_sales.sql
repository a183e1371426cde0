-- MySQL/MariaDB twin of ../sqlite/2001_sales.sql (BIGINT integers).
CREATE TABLE IF NOT EXISTS sales (
    id             BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name           TEXT   NOT NULL,
    price_cents    BIGINT NOT NULL,
    stock          BIGINT NOT NULL,
    per_user_limit BIGINT NOT NULL,
    starts_at_ms   BIGINT NOT NULL,
    ends_at_ms     BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_general_ci;
