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
//! Positions come from one counter row updated in the transaction's last
//! statements: its row lock (PostgreSQL) or the single writer (SQLite) is
//! held until commit, so positions are gap-free and commit in order. That is
//! what lets a reader follow the outbox with a cursor (`position > n`)
//! without missing a row that a slower transaction commits later.

use sqlx::Row;

use crate::{Param, Tx, push_value_rows};

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
        mut encode: impl FnMut(&EventHeader) -> Vec<u8>,
    ) -> Result<EventHeader, sqlx::Error> {
        let mut headers = self
            .record_all(tx, vec![event], |_, header| encode(header))
            .await?;
        headers.pop().ok_or(sqlx::Error::RowNotFound)
    }

    /// Records `events` in the caller's transaction, in that order, in two
    /// statements however many they are (one takes every counter, one
    /// writes every row: on PostgreSQL each statement is a round trip).
    /// Positions follow the events' order, and so do the sequences of
    /// events of one aggregate. `encode(i, header)` builds the payload of
    /// `events[i]`. Call it as the transaction's last statements (see the
    /// module's note); the aggregates' counters are locked in the order of
    /// their first event, the position's last.
    pub async fn record_all(
        &self,
        tx: &mut Tx,
        mut events: Vec<NewEvent<'_>>,
        mut encode: impl FnMut(usize, &EventHeader) -> Vec<u8>,
    ) -> Result<Vec<EventHeader>, sqlx::Error> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (counts, slots) = per_aggregate(&events)?;
        let (mut next_sequence, mut next_position) = self.take_counters(tx, &counts).await?;
        let mut headers = Vec::with_capacity(events.len());
        let mut payloads = Vec::with_capacity(events.len());
        for (index, (event, &slot)) in events.iter_mut().zip(&slots).enumerate() {
            let header = EventHeader {
                event_id: uuid::Uuid::now_v7().to_string(),
                aggregate_id: event.aggregate_id.to_owned(),
                sequence: next_sequence[slot],
                occurred_at_ms: event.now_ms,
                // Moved: the rows' insert reads it from the header.
                traceparent: event.traceparent.take(),
            };
            next_sequence[slot] += 1;
            payloads.push(encode(index, &header));
            headers.push(header);
        }
        let mut sql = format!(
            "INSERT INTO {}_outbox (position, event_id, aggregate_id, sequence, event_type, \
             message_type, payload, traceparent, recorded_at) VALUES ",
            self.prefix
        );
        push_value_rows(&mut sql, events.len(), 9);
        let mut params = Vec::with_capacity(events.len() * 9);
        for ((event, header), payload) in events.iter().zip(&headers).zip(&payloads) {
            params.extend([
                Param::Int(next_position),
                Param::Text(&header.event_id),
                Param::Text(event.aggregate_id),
                Param::Int(header.sequence),
                Param::Text(event.event_type),
                Param::Text(event.message_type),
                Param::Blob(payload),
                Param::OptText(header.traceparent.as_deref()),
                Param::Int(event.now_ms),
            ]);
            next_position += 1;
        }
        tx.execute(&sql, &params).await?;
        Ok(headers)
    }

    /// Adds each aggregate's count to its counter and the events' number to
    /// the position's (the counter named ""), in one statement; returns the
    /// first of the blocks taken: each aggregate's first sequence, in
    /// `counts`' order, and the first position.
    async fn take_counters(
        &self,
        tx: &mut Tx,
        counts: &[(&str, i64)],
    ) -> Result<(Vec<i64>, i64), sqlx::Error> {
        let total: i64 = counts.iter().map(|(_, count)| count).sum();
        let mut sql = format!(
            "INSERT INTO {}_outbox_counters (name, value) VALUES ",
            self.prefix
        );
        push_value_rows(&mut sql, counts.len(), 2);
        let mut params = Vec::with_capacity(counts.len() * 2 + 1);
        for (aggregate, count) in counts {
            params.extend([Param::Text(aggregate), Param::Int(*count)]);
        }
        sql.push_str(&format!(
            ", ('', ${0}) ON CONFLICT (name) DO UPDATE SET value = {1}_outbox_counters.value \
             + excluded.value RETURNING name, value",
            params.len() + 1,
            self.prefix
        ));
        params.push(Param::Int(total));
        let values: Vec<(String, i64)> = tx
            .query_rows(&sql, &params, |values: &mut Vec<(String, i64)>, row| {
                values.push((row.text("name")?, row.int("value")?));
                Ok(())
            })
            .await?;
        let value_of = |name: &str| {
            values
                .iter()
                .find(|(counter, _)| counter == name)
                .map(|(_, value)| *value)
                .ok_or(sqlx::Error::RowNotFound)
        };
        // Each block ends at its counter's new value.
        let sequences = counts
            .iter()
            .map(|(aggregate, count)| Ok(value_of(aggregate)? - count + 1))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok((sequences, value_of("")? - total + 1))
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

/// Each aggregate of `events` with its number of events, in the order of
/// its first event, and for each event its aggregate's index in that list.
type AggregateCounts<'a> = (Vec<(&'a str, i64)>, Vec<usize>);

fn per_aggregate<'a>(events: &[NewEvent<'a>]) -> Result<AggregateCounts<'a>, sqlx::Error> {
    let mut counts: Vec<(&str, i64)> = Vec::new();
    let mut slots = Vec::with_capacity(events.len());
    for event in events {
        // The position's counter is the one named "": an aggregate of that
        // name would be counted twice in one statement.
        if event.aggregate_id.is_empty() {
            return Err(sqlx::Error::Protocol(
                "an outbox event needs an aggregate id".into(),
            ));
        }
        let slot = match counts
            .iter()
            .position(|(aggregate, _)| *aggregate == event.aggregate_id)
        {
            Some(slot) => slot,
            None => {
                counts.push((event.aggregate_id, 0));
                counts.len() - 1
            }
        };
        counts[slot].1 += 1;
        slots.push(slot);
    }
    Ok((counts, slots))
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
