//! `orderctl events tail`: follows the order or stock events on NATS
//! JetStream with a durable consumer, printing each as text or JSON and
//! acking it after it is printed (docs/events.md). A redelivered event
//! already printed in this run is acked and skipped: consumers deduplicate
//! by event id.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use ordermesh_proto::events::v1::{EventHeader, OrderEvent, StockEvent};
use prost::Message;
use serde_json::{Value, json};

use crate::cli::{EventStream, TailArgs};

/// Event ids remembered for deduplication (a redelivery comes soon after).
const REMEMBERED: usize = 100_000;

pub async fn tail(args: &TailArgs, json_output: bool) -> anyhow::Result<()> {
    let mut options = async_nats::ConnectOptions::new().name("orderctl");
    if let Some(creds) = &args.nats_creds {
        options = options
            .credentials_file(creds)
            .await
            .with_context(|| format!("reading {}", creds.display()))?;
    }
    let client = options
        .connect(&args.nats_url)
        .await
        .with_context(|| format!("connecting to NATS at {}", args.nats_url))?;
    let js = jetstream::new(client);
    let (stream_name, filter) = match args.stream {
        EventStream::Orders => ("ORDERMESH_ORDERS", "ordermesh.orders.>"),
        EventStream::Stock => ("ORDERMESH_STOCK", "ordermesh.stock.>"),
    };
    let stream = js
        .get_stream(stream_name)
        .await
        .with_context(|| format!("stream {stream_name} (has a relay published yet?)"))?;
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(
            &args.durable,
            consumer::pull::Config {
                durable_name: Some(args.durable.clone()),
                filter_subject: filter.to_owned(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("consumer {} on {stream_name}", args.durable))?;
    let mut seen = Seen::default();
    let mut printed = 0;
    loop {
        // Pull no more than is still wanted: a message pulled but not
        // acked would wait out its ack wait before the next run got it.
        let wanted = args.count.map_or(256, |count| count - printed);
        if wanted == 0 {
            break;
        }
        let mut batch = consumer
            .batch()
            .max_messages(wanted)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .context("pulling events")?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("receiving an event: {e}"))?;
            let line = render(&message.subject, &message.payload, json_output);
            let fresh = line.as_ref().is_none_or(|(id, _)| seen.insert(id.clone()));
            if fresh {
                match &line {
                    Some((_, text)) => say!("{text}"),
                    None => say!("{} (not an ordermesh event)", message.subject),
                }
                printed += 1;
            }
            // Confirmed by the server before the next: a run that ends
            // right after must not leave its last acks unsent.
            message
                .double_ack()
                .await
                .map_err(|e| anyhow::anyhow!("acking an event: {e}"))?;
        }
    }
    Ok(())
}

/// The event's id and its line, or None for a payload that is not one.
fn render(subject: &str, payload: &[u8], json_output: bool) -> Option<(String, String)> {
    if subject.starts_with("ordermesh.stock.") {
        let event = StockEvent::decode(payload).ok()?;
        let header = event.header.clone()?;
        let line = if json_output {
            let mut value = header_json(subject, &header, event.kind().as_str_name());
            value["productId"] = json!(event.product_id);
            value["available"] = json!(event.available);
            value["delta"] = json!(event.delta);
            value.to_string()
        } else {
            format!(
                "{subject} {} #{} available={} delta={:+}",
                event.product_id, header.sequence, event.available, event.delta
            )
        };
        return Some((header.event_id, line));
    }
    let event = OrderEvent::decode(payload).ok()?;
    let header = event.header.clone()?;
    let line = if json_output {
        let mut value = header_json(subject, &header, event.kind().as_str_name());
        value["orderId"] = json!(event.order_id);
        value["customerId"] = json!(event.customer_id);
        value["status"] = json!(event.status);
        value["failureReason"] = json!(event.failure_reason);
        value["totalMinorUnits"] = json!(event.total_minor_units);
        value["currency"] = json!(event.currency);
        value.to_string()
    } else {
        let reason = if event.failure_reason.is_empty() {
            String::new()
        } else {
            format!(" {}", event.failure_reason)
        };
        format!(
            "{subject} {} #{} {}{reason}",
            event.order_id, header.sequence, event.status
        )
    };
    Some((header.event_id, line))
}

fn header_json(subject: &str, header: &EventHeader, kind: &str) -> Value {
    json!({
        "subject": subject,
        "eventId": header.event_id,
        "aggregateId": header.aggregate_id,
        "sequence": header.sequence,
        "kind": kind,
        "occurredAt": header.occurred_at.map(|t| t.to_string()),
        "traceparent": header.traceparent,
    })
}

/// The ids printed in this run, the oldest forgotten past [`REMEMBERED`].
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// True when `id` was not seen before.
    fn insert(&mut self, id: String) -> bool {
        if !self.ids.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > REMEMBERED
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_print_once_per_id() {
        let event = OrderEvent {
            header: Some(EventHeader {
                event_id: "ev-1".into(),
                aggregate_id: "ord_1".into(),
                sequence: 2,
                occurred_at: None,
                traceparent: String::new(),
            }),
            kind: 3,
            order_id: "ord_1".into(),
            customer_id: "alice".into(),
            status: "FAILED".into(),
            failure_reason: "CARD_DECLINED".into(),
            total_minor_units: 500,
            currency: "USD".into(),
        };
        let payload = event.encode_to_vec();
        let (id, text) = render("ordermesh.orders.failed", &payload, false).expect("an event");
        assert_eq!(
            text,
            "ordermesh.orders.failed ord_1 #2 FAILED CARD_DECLINED"
        );
        let (_, json) = render("ordermesh.orders.failed", &payload, true).expect("an event");
        let json: Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(json["kind"], "ORDER_EVENT_KIND_FAILED");
        assert_eq!(json["eventId"], "ev-1");
        assert!(render("ordermesh.orders.placed", b"\xff\xff", false).is_none());

        let mut seen = Seen::default();
        assert!(seen.insert(id.clone()));
        assert!(!seen.insert(id), "a redelivery is skipped");
    }
}
