-- Saga leases with fencing numbers and live holders (issue 18). Additive.
-- Grows by one with every new holder of the order's lease; sent with every
-- step so inventory and payment refuse an older holder's steps.
ALTER TABLE order_orders ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
-- The process incarnation (order_holders) holding the lease; its leases are
-- free as soon as it stops heartbeating. NULL for leases of older releases.
ALTER TABLE order_orders ADD COLUMN lease_holder TEXT;
-- 1 when the last claim took the lease from a holder still holding it.
ALTER TABLE order_orders ADD COLUMN taken_over BIGINT NOT NULL DEFAULT 0;

-- One row per running order-service process; heartbeat_at by the
-- database's clock (Unix ms).
CREATE TABLE IF NOT EXISTS order_holders (
    holder_id    TEXT PRIMARY KEY,
    -- The replica's stable name (--replica-name), when it has one: a new
    -- incarnation of it retires the old ones at start.
    replica      TEXT,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
