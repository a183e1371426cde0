-- MySQL/MariaDB twin of ../sqlite/1001_users.sql. The email is VARCHAR (InnoDB cannot index
-- TEXT whole; the service refuses emails over 254 bytes) and utf8mb4_bin, comparing bytes as
-- SQLite and PostgreSQL do: a case-insensitive collation would make 'A@x' and 'a@x' one email.
CREATE TABLE IF NOT EXISTS users (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    email         VARCHAR(255) COLLATE utf8mb4_bin NOT NULL UNIQUE,
    password_hash TEXT         NOT NULL,
    role          VARCHAR(32)  NOT NULL DEFAULT 'customer',
    created_at_ms BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_general_ci;
