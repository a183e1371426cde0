-- Sales of the inventory service. `stock` is the initial stock; what is left is derived from the
-- accepted orders (the database is the truth; the stock counters are a cache of it).
-- (IF NOT EXISTS: a database created before each service owned its tables already has it.)
CREATE TABLE IF NOT EXISTS sales (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT    NOT NULL,
    price_cents    INTEGER NOT NULL,
    stock          INTEGER NOT NULL,
    per_user_limit INTEGER NOT NULL,
    starts_at_ms   INTEGER NOT NULL,
    ends_at_ms     INTEGER NOT NULL,
    created_at_ms  INTEGER NOT NULL
);
