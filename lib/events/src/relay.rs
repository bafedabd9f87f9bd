//! The relay: reads a service's outbox in position order and publishes each
//! row to its JetStream stream, marking it published only after the PubAck.
//!
//! Once each: every message carries `Nats-Msg-Id` = the event id, so a row
//! sent again after a crash between the publish and the mark (or after a
//! lost ack) is dropped by JetStream's duplicate window (2 minutes, longer
//! than the relay's worst retry). In order: one relay publishes at a time
//! (a lease in the service's database) and awaits each batch's acks in
//! order, stopping at the first failure and starting over from the first
//! row not acknowledged.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use ordermesh_runtime::metrics::Metrics;
use ordermesh_runtime::shutdown::Shutdown;
use ordermesh_storage::now_millis;
use ordermesh_storage::outbox::{Outbox, OutboxRow};
use sqlx::AnyPool;

use crate::settings::EventSettings;

/// A service's stream: its name and its subjects' prefix.
#[derive(Clone, Copy, Debug)]
pub struct StreamSpec {
    /// `ORDERMESH_ORDERS`
    pub name: &'static str,
    /// `ordermesh.orders`: subjects are `<prefix>.<event type>`.
    pub subject_prefix: &'static str,
    /// The `service` label of its metrics and the NATS client's name.
    pub service: &'static str,
}

pub const ORDERS: StreamSpec = StreamSpec {
    name: "ORDERMESH_ORDERS",
    subject_prefix: "ordermesh.orders",
    service: "order",
};

pub const STOCK: StreamSpec = StreamSpec {
    name: "ORDERMESH_STOCK",
    subject_prefix: "ordermesh.stock",
    service: "inventory",
};

/// The header naming the payload's protobuf message.
pub const TYPE_HEADER: &str = "Ordermesh-Event-Type";

/// How long the relay's lease lasts without renewal; a relay that died is
/// replaced after at most this long.
const LEASE: Duration = Duration::from_secs(10);
/// Rows published per batch (their acks awaited together).
const BATCH: i64 = 256;
/// How often published rows older than the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Longest pause between tries while NATS is away.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One service's relay.
pub struct Relay {
    pub outbox: Outbox,
    pub pool: AnyPool,
    pub stream: StreamSpec,
    pub settings: EventSettings,
    pub metrics: std::sync::Arc<Metrics>,
    pub tracer: opentelemetry_sdk::trace::Tracer,
    /// This process, as the lease knows it.
    pub holder: String,
}

/// Why a round stopped early.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("outbox: {0}")]
    Database(#[from] sqlx::Error),
    #[error("NATS: {0}")]
    Nats(String),
}

impl Relay {
    /// Runs until `shutdown`: publishes while it holds the lease, keeps the
    /// backlog metrics current either way, and prunes old published rows.
    pub async fn run(self, shutdown: Shutdown) {
        let service = self.stream.service;
        let mut context: Option<jetstream::Context> = None;
        let mut backoff = Duration::from_millis(100);
        let mut last_prune = tokio::time::Instant::now()
            .checked_sub(PRUNE_EVERY)
            .unwrap_or_else(tokio::time::Instant::now);
        loop {
            self.report_backlog().await;
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                self.prune().await;
            }
            let pause = match self.round(&mut context).await {
                Ok(published) => {
                    backoff = Duration::from_millis(100);
                    if published >= BATCH as usize {
                        Duration::ZERO
                    } else {
                        self.settings.outbox_poll
                    }
                }
                Err(error) => {
                    self.metrics
                        .outbox_publish_errors_total
                        .with_label_values(&[service])
                        .inc();
                    tracing::warn!(service, %error, retry_in = ?backoff, "outbox relay");
                    if matches!(error, RoundError::Nats(_)) {
                        // Start over with a fresh stream check: the server
                        // may have come back empty.
                        context = None;
                    }
                    let pause = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    pause
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = shutdown.cancelled() => break,
            }
        }
        if let Err(error) = self.outbox.release_lease(&self.pool, &self.holder).await {
            tracing::warn!(service, %error, "cannot release the relay's lease");
        }
    }

    /// Publishes up to one batch if this relay holds the lease; returns how
    /// many rows were published.
    async fn round(&self, context: &mut Option<jetstream::Context>) -> Result<usize, RoundError> {
        let ttl = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        if !self
            .outbox
            .try_lease(&self.pool, &self.holder, now_millis(), ttl)
            .await?
        {
            return Ok(0);
        }
        let rows = self.outbox.pending(&self.pool, BATCH).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let js = match context {
            Some(js) => js.clone(),
            None => {
                let js = self.connect().await?;
                *context = Some(js.clone());
                js
            }
        };
        let mut acks = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in &rows {
            match self.publish(&js, row).await {
                Ok(ack) => acks.push((row.position, ack)),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        let mut acknowledged = Vec::with_capacity(acks.len());
        for (position, ack) in acks {
            match ack.await {
                Ok(_) => acknowledged.push(position),
                Err(error) => {
                    failure.get_or_insert(RoundError::Nats(format!("no PubAck: {error}")));
                    break;
                }
            }
        }
        self.outbox
            .mark_published(&self.pool, &acknowledged, now_millis())
            .await?;
        self.metrics
            .outbox_published_total
            .with_label_values(&[self.stream.service])
            .inc_by(acknowledged.len() as u64);
        match failure {
            Some(error) => Err(error),
            None => Ok(acknowledged.len()),
        }
    }

    /// Connects and makes sure the stream exists.
    async fn connect(&self) -> Result<jetstream::Context, RoundError> {
        let url = self.settings.nats_url.as_deref().unwrap_or_default();
        let options = self
            .settings
            .connect_options(&format!("ordermesh-{}-relay", self.stream.service))
            .await
            .map_err(|e| RoundError::Nats(format!("{e:#}")))?;
        let client = options
            .connect(url)
            .await
            .map_err(|e| RoundError::Nats(format!("connecting to {url}: {e}")))?;
        let js = jetstream::new(client);
        js.get_or_create_stream(stream::Config {
            name: self.stream.name.to_owned(),
            subjects: vec![format!("{}.>", self.stream.subject_prefix)],
            max_age: self.settings.nats_stream_max_age,
            max_bytes: self.settings.nats_stream_max_bytes,
            num_replicas: self.settings.nats_stream_replicas,
            duplicate_window: Duration::from_secs(120),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| RoundError::Nats(format!("stream {}: {e}", self.stream.name)))?;
        tracing::info!(
            service = self.stream.service,
            stream = self.stream.name,
            "outbox relay connected"
        );
        Ok(js)
    }

    /// Sends one row; the returned future resolves with its PubAck. The
    /// publish is a span of the order's trace (the row's `traceparent`),
    /// and the message carries that span's context on.
    async fn publish(
        &self,
        js: &jetstream::Context,
        row: &OutboxRow,
    ) -> Result<jetstream::context::PublishAckFuture, RoundError> {
        let subject = format!("{}.{}", self.stream.subject_prefix, row.event_type);
        let mut parent_headers = http::HeaderMap::new();
        if let Some(traceparent) = row
            .traceparent
            .as_deref()
            .and_then(|t| http::HeaderValue::from_str(t).ok())
        {
            parent_headers.insert("traceparent", traceparent);
        }
        let parent = ordermesh_runtime::trace::extract(&parent_headers);
        let span = self
            .tracer
            .span_builder(format!("publish {subject}"))
            .with_kind(SpanKind::Producer)
            .with_attributes([
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("messaging.destination.name", subject.clone()),
                KeyValue::new("messaging.message.id", row.event_id.clone()),
            ])
            .start_with_context(&self.tracer, &parent);
        let cx = Context::current_with_span(span);
        let mut outgoing = http::HeaderMap::new();
        ordermesh_runtime::trace::inject(&cx, &mut outgoing);

        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", row.event_id.as_str());
        headers.insert(TYPE_HEADER, row.message_type.as_str());
        headers.insert("Ordermesh-Aggregate-Id", row.aggregate_id.as_str());
        headers.insert("Ordermesh-Sequence", row.sequence.to_string().as_str());
        if let Some(traceparent) = outgoing.get("traceparent").and_then(|v| v.to_str().ok()) {
            headers.insert("traceparent", traceparent);
        }
        let sent = js
            .publish_with_headers(subject, headers, bytes::Bytes::from(row.payload.clone()))
            .await
            .map_err(|e| RoundError::Nats(format!("publish: {e}")));
        if let Err(error) = &sent {
            cx.span()
                .set_status(opentelemetry::trace::Status::error(error.to_string()));
        }
        cx.span().end();
        sent
    }

    async fn report_backlog(&self) {
        let service = self.stream.service;
        match self.outbox.backlog(&self.pool).await {
            Ok(backlog) => {
                self.metrics
                    .outbox_pending_rows
                    .with_label_values(&[service])
                    .set(backlog.rows);
                let age_ms = backlog
                    .oldest_recorded_at_ms
                    .map_or(0, |oldest| (now_millis() - oldest).max(0));
                self.metrics
                    .outbox_oldest_age_seconds
                    .with_label_values(&[service])
                    .set(age_ms / 1000);
            }
            Err(error) => tracing::warn!(service, %error, "cannot read the outbox's backlog"),
        }
    }

    async fn prune(&self) {
        let retention = i64::try_from(self.settings.outbox_retention.as_millis()).unwrap_or(0);
        match self
            .outbox
            .prune(&self.pool, now_millis() - retention)
            .await
        {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(service = self.stream.service, pruned, "outbox pruned"),
            Err(error) => {
                tracing::warn!(service = self.stream.service, %error, "cannot prune the outbox")
            }
        }
    }
}
