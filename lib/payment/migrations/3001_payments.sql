-- The payment service's table: one row per order, the order id being the
-- idempotency key of the charge. Times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS payment_payments (
    payment_id         TEXT PRIMARY KEY,
    order_id           TEXT NOT NULL UNIQUE,
    amount_minor_units BIGINT NOT NULL,
    currency           TEXT NOT NULL,
    -- The token's masked form (e.g. "pm_card_…"), never the whole token.
    method_kind        TEXT NOT NULL,
    status             TEXT NOT NULL,
    decline_reason     TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
