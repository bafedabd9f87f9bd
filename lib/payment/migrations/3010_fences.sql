-- The largest saga fencing number seen per order (issue 18): a step with a
-- smaller one comes from a holder that lost the order's lease.
CREATE TABLE IF NOT EXISTS payment_fences (
    order_id TEXT PRIMARY KEY,
    fence    BIGINT NOT NULL
);
