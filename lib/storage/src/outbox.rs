//! The transactional outbox's SQL, shared by the services that publish
//! events (order, inventory): each has the tables `<prefix>_outbox`,
//! `<prefix>_outbox_counters` and `<prefix>_outbox_lease` (its migrations).
//!
//! Writers call [`Outbox::record`] inside the transaction of the change the
//! event reports, so an event exists exactly when its change does. The relay
//! (`ordermesh-events`) reads [`Outbox::pending`] in position order, marks
//! rows published after JetStream's PubAck, prunes old published rows, and
//! holds [`Outbox::try_lease`] so one replica publishes at a time.
//!
//! Positions come from one counter row updated as the transaction's last
//! statement: its row lock (PostgreSQL) or the single writer (SQLite) is
//! held until commit, so positions are gap-free and commit in order. That is
//! what lets a reader follow the outbox with a cursor (`position > n`)
//! without missing a row that a slower transaction commits later.

use sqlx::Row;

use crate::{Param, Tx};

/// An event's identity, known only inside the transaction that records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventHeader {
    pub event_id: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub occurred_at_ms: i64,
    pub traceparent: Option<String>,
}

impl EventHeader {
    /// The header as the event contracts carry it (`ordermesh.events.v1`).
    pub fn to_proto(&self) -> ordermesh_proto::events::v1::EventHeader {
        ordermesh_proto::events::v1::EventHeader {
            event_id: self.event_id.clone(),
            aggregate_id: self.aggregate_id.clone(),
            sequence: self.sequence,
            occurred_at: Some(ordermesh_proto::convert::timestamp(self.occurred_at_ms)),
            traceparent: self.traceparent.clone().unwrap_or_default(),
        }
    }
}

/// What a writer knows of an event before recording it.
#[derive(Clone, Debug)]
pub struct NewEvent<'a> {
    pub aggregate_id: &'a str,
    /// The subject's last token (`confirmed`, `changed`...).
    pub event_type: &'a str,
    /// The payload's protobuf message, by full name.
    pub message_type: &'a str,
    pub traceparent: Option<String>,
    pub now_ms: i64,
}

/// One stored event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    pub position: i64,
    pub event_id: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub message_type: String,
    pub payload: Vec<u8>,
    pub traceparent: Option<String>,
    pub recorded_at_ms: i64,
}

/// What is waiting to be published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    pub rows: i64,
    /// When the oldest unpublished row was recorded.
    pub oldest_recorded_at_ms: Option<i64>,
}

/// One service's outbox tables.
#[derive(Clone, Copy, Debug)]
pub struct Outbox {
    prefix: &'static str,
}

const ROW_COLUMNS: &str = "position, event_id, aggregate_id, sequence, event_type, \
     message_type, payload, traceparent, recorded_at";

impl Outbox {
    /// The tables `<prefix>_outbox…` (`order`, `inventory`).
    pub const fn new(prefix: &'static str) -> Self {
        Self { prefix }
    }

    pub fn prefix(&self) -> &'static str {
        self.prefix
    }

    /// Records `event` in the caller's transaction: `encode` builds the
    /// payload from the header (its id and sequence). Call it as the
    /// transaction's last statement (see the module's note).
    pub async fn record(
        &self,
        tx: &mut Tx,
        event: NewEvent<'_>,
        encode: impl FnOnce(&EventHeader) -> Vec<u8>,
    ) -> Result<EventHeader, sqlx::Error> {
        let NewEvent {
            aggregate_id,
            event_type,
            message_type,
            traceparent,
            now_ms,
        } = event;
        let (sequence, position) = self.next_pair(tx, aggregate_id).await?;
        let header = EventHeader {
            event_id: uuid::Uuid::now_v7().to_string(),
            aggregate_id: aggregate_id.to_owned(),
            sequence,
            occurred_at_ms: now_ms,
            traceparent,
        };
        let payload = encode(&header);
        tx.execute(
            &format!(
                "INSERT INTO {}_outbox (position, event_id, aggregate_id, sequence, event_type, \
                 message_type, payload, traceparent, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                self.prefix
            ),
            &[
                Param::Int(position),
                Param::Text(&header.event_id),
                Param::Text(aggregate_id),
                Param::Int(sequence),
                Param::Text(event_type),
                Param::Text(message_type),
                Param::Blob(&payload),
                Param::OptText(header.traceparent.as_deref()),
                Param::Int(now_ms),
            ],
        )
        .await?;
        Ok(header)
    }

    /// The aggregate's next sequence and the outbox's next position (1 for
    /// a new counter), in one statement: the aggregate's counter is locked
    /// first, then the position's, as two statements did.
    async fn next_pair(&self, tx: &mut Tx, aggregate_id: &str) -> Result<(i64, i64), sqlx::Error> {
        // The position's counter is the one named "": an aggregate of that
        // name would be counted twice in one statement.
        if aggregate_id.is_empty() {
            return Err(sqlx::Error::Protocol(
                "an outbox event needs an aggregate id".into(),
            ));
        }
        let (sequence, position) = tx
            .query_rows(
                &format!(
                    "INSERT INTO {0}_outbox_counters (name, value) VALUES ($1, 1), ('', 1) \
                     ON CONFLICT (name) DO UPDATE SET value = {0}_outbox_counters.value + 1 \
                     RETURNING name, value",
                    self.prefix
                ),
                &[Param::Text(aggregate_id)],
                |(sequence, position): &mut (Option<i64>, Option<i64>), row| {
                    let value = row.int("value")?;
                    if row.text("name")?.is_empty() {
                        *position = Some(value);
                    } else {
                        *sequence = Some(value);
                    }
                    Ok(())
                },
            )
            .await?;
        sequence.zip(position).ok_or(sqlx::Error::RowNotFound)
    }

    /// Up to `limit` unpublished rows, oldest position first.
    pub async fn pending(
        &self,
        pool: &sqlx::AnyPool,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {ROW_COLUMNS} FROM {}_outbox WHERE published_at IS NULL \
             ORDER BY position LIMIT $1",
            self.prefix
        ))
        .bind(limit)
        .fetch_all(pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Up to `limit` rows after `position`, published or not (a cursor
    /// over what the outbox still holds).
    pub async fn after(
        &self,
        pool: &sqlx::AnyPool,
        position: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {ROW_COLUMNS} FROM {}_outbox WHERE position > $1 \
             ORDER BY position LIMIT $2",
            self.prefix
        ))
        .bind(position)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Marks rows published (JetStream acknowledged them).
    pub async fn mark_published(
        &self,
        pool: &sqlx::AnyPool,
        positions: &[i64],
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let (Some(first), Some(last)) = (positions.first(), positions.last()) else {
            return Ok(());
        };
        if positions.windows(2).all(|w| w[1] == w[0] + 1) {
            sqlx::query(&format!(
                "UPDATE {}_outbox SET published_at = $1 \
                 WHERE position >= $2 AND position <= $3 AND published_at IS NULL",
                self.prefix
            ))
            .bind(now_ms)
            .bind(*first)
            .bind(*last)
            .execute(pool)
            .await?;
            return Ok(());
        }
        let mut tx = pool.begin().await?;
        for position in positions {
            sqlx::query(&format!(
                "UPDATE {}_outbox SET published_at = $1 WHERE position = $2",
                self.prefix
            ))
            .bind(now_ms)
            .bind(*position)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Deletes rows published before `before_ms`; returns how many.
    pub async fn prune(&self, pool: &sqlx::AnyPool, before_ms: i64) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query(&format!(
            "DELETE FROM {}_outbox WHERE published_at IS NOT NULL AND published_at < $1",
            self.prefix
        ))
        .bind(before_ms)
        .execute(pool)
        .await?
        .rows_affected())
    }

    /// How many rows wait, and since when.
    pub async fn backlog(&self, pool: &sqlx::AnyPool) -> Result<Backlog, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT COUNT(*) AS rows_pending, MIN(recorded_at) AS oldest \
             FROM {}_outbox WHERE published_at IS NULL",
            self.prefix
        ))
        .fetch_one(pool)
        .await?;
        Ok(Backlog {
            rows: row.try_get("rows_pending")?,
            oldest_recorded_at_ms: row.try_get("oldest")?,
        })
    }

    /// Takes or renews the relay's lease for `holder` until `now_ms + ttl_ms`
    /// when it is free (expired) or already `holder`'s. True when held.
    pub async fn try_lease(
        &self,
        pool: &sqlx::AnyPool,
        holder: &str,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let taken = sqlx::query(&format!(
            "INSERT INTO {0}_outbox_lease (name, holder, until) VALUES ('relay', $1, $2) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until \
             WHERE {0}_outbox_lease.until < $3 OR {0}_outbox_lease.holder = excluded.holder",
            self.prefix
        ))
        .bind(holder)
        .bind(now_ms + ttl_ms)
        .bind(now_ms)
        .execute(pool)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    /// Gives the lease up (a relay stopping), so another may take it now.
    pub async fn release_lease(
        &self,
        pool: &sqlx::AnyPool,
        holder: &str,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "DELETE FROM {}_outbox_lease WHERE name = 'relay' AND holder = $1",
            self.prefix
        ))
        .bind(holder)
        .execute(pool)
        .await?;
        Ok(())
    }
}

fn decode(row: &sqlx::any::AnyRow) -> Result<OutboxRow, sqlx::Error> {
    Ok(OutboxRow {
        position: row.try_get("position")?,
        event_id: row.try_get("event_id")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        message_type: row.try_get("message_type")?,
        payload: row.try_get("payload")?,
        traceparent: row.try_get("traceparent")?,
        recorded_at_ms: row.try_get("recorded_at")?,
    })
}
