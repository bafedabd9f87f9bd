-- The order service's tables. Times are Unix milliseconds; flags are 0/1.
CREATE TABLE IF NOT EXISTS order_orders (
    order_id            TEXT PRIMARY KEY,
    customer_id         TEXT NOT NULL,
    -- A simulated test token (pm_card_visa...). A real deployment would keep
    -- a vault reference here, never a card number.
    payment_method      TEXT NOT NULL,
    currency            TEXT NOT NULL,
    total_minor_units   BIGINT NOT NULL,
    status              TEXT NOT NULL,
    failure_reason      TEXT,
    -- Where the saga stands: reserve, charge, commit, compensate, done.
    step                TEXT NOT NULL,
    compensate_stock    BIGINT NOT NULL DEFAULT 0,
    compensate_payment  BIGINT NOT NULL DEFAULT 0,
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at     BIGINT NOT NULL DEFAULT 0,
    -- Whoever drives the saga holds a lease, so two replicas never do.
    lease_owner         TEXT,
    lease_until         BIGINT NOT NULL DEFAULT 0,
    idempotency_key     TEXT,
    request_fingerprint TEXT NOT NULL,
    version             BIGINT NOT NULL DEFAULT 1,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);

CREATE UNIQUE INDEX IF NOT EXISTS order_orders_idempotency
    ON order_orders (customer_id, idempotency_key);
CREATE INDEX IF NOT EXISTS order_orders_by_customer
    ON order_orders (customer_id, created_at, order_id);
CREATE INDEX IF NOT EXISTS order_orders_unfinished
    ON order_orders (step, next_attempt_at);

CREATE TABLE IF NOT EXISTS order_items (
    order_id               TEXT NOT NULL REFERENCES order_orders (order_id),
    line                   BIGINT NOT NULL,
    product_id             TEXT NOT NULL,
    quantity               BIGINT NOT NULL,
    unit_price_minor_units BIGINT NOT NULL,
    PRIMARY KEY (order_id, line)
);
