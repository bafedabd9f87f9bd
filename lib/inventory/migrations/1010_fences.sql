-- The largest saga fencing number seen per reservation (issue 18): a step
-- with a smaller one comes from a holder that lost the order's lease.
CREATE TABLE IF NOT EXISTS inventory_fences (
    reservation_id TEXT PRIMARY KEY,
    fence          BIGINT NOT NULL
);
