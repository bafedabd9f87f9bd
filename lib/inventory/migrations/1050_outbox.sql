-- The transactional outbox (docs/events.md): each event is written in the
-- transaction of the change it reports and published later by the relay.
CREATE TABLE IF NOT EXISTS inventory_outbox (
    -- Commit order across the service (from inventory_outbox_counters' '' row,
    -- whose row lock is held until commit, so positions commit in order).
    position     BIGINT PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    aggregate_id TEXT NOT NULL,
    -- 1, 2, 3... per aggregate.
    sequence     BIGINT NOT NULL,
    -- The subject's last token: changed, low
    event_type   TEXT NOT NULL,
    -- The protobuf message's full name (the payload's type header).
    message_type TEXT NOT NULL,
    payload      BYTEA NOT NULL,
    traceparent  TEXT,
    recorded_at  BIGINT NOT NULL,
    -- NULL until JetStream acknowledged it.
    published_at BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS inventory_outbox_by_aggregate
    ON inventory_outbox (aggregate_id, sequence);
CREATE INDEX IF NOT EXISTS inventory_outbox_by_published
    ON inventory_outbox (published_at, position);

-- The next sequence per aggregate ('' is the service's position counter).
CREATE TABLE IF NOT EXISTS inventory_outbox_counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- One relay publishes at a time, across replicas.
CREATE TABLE IF NOT EXISTS inventory_outbox_lease (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  BIGINT NOT NULL
);
