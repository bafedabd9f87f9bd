-- The inventory service's tables. Times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS inventory_products (
    product_id        TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    price_minor_units BIGINT NOT NULL,
    currency          TEXT NOT NULL,
    -- Units that can still be reserved; the database refuses a negative.
    available         BIGINT NOT NULL CHECK (available >= 0),
    -- Seeded stock plus every adjustment: available + reserved + sold.
    stock_total       BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS inventory_reservations (
    -- The caller's key: the order id.
    reservation_id TEXT PRIMARY KEY,
    -- RESERVED, COMMITTED, RELEASED or EXPIRED.
    status         TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

CREATE INDEX IF NOT EXISTS inventory_reservations_expiry
    ON inventory_reservations (status, expires_at);

CREATE TABLE IF NOT EXISTS inventory_reservation_items (
    reservation_id         TEXT NOT NULL REFERENCES inventory_reservations (reservation_id),
    product_id             TEXT NOT NULL REFERENCES inventory_products (product_id),
    quantity               BIGINT NOT NULL,
    unit_price_minor_units BIGINT NOT NULL,
    currency               TEXT NOT NULL,
    PRIMARY KEY (reservation_id, product_id)
);
