//! `orderctl events tail`: follows the order or stock events from one of
//! two sources, NATS JetStream through a durable consumer (`nats.rs`) or
//! the gateway's SSE feed (`sse.rs`), and prints each as text or JSON, the
//! same lines whichever the source. Both may hand over an event again (a
//! redelivery, a resumed feed), so an event already printed in this run is
//! skipped: consumers deduplicate by event id (docs/events.md).

mod nats;
mod sse;

use std::collections::{HashSet, VecDeque};

use ordermesh_proto::events::v1::{EventHeader, OrderEvent, StockEvent};
use serde_json::{Value, json};

use crate::cli::TailArgs;

/// Event ids remembered for deduplication (a redelivery comes soon after).
const REMEMBERED: usize = 100_000;

/// Follows NATS JetStream through the durable consumer `--durable`.
pub async fn tail_nats(args: &TailArgs, json_output: bool) -> anyhow::Result<()> {
    nats::tail(args, Printer::new(json_output, args.count)).await
}

/// Follows the gateway's SSE feed, resuming after each drop.
pub async fn tail_gateway(
    args: &TailArgs,
    gateway: &sse::Gateway<'_>,
    json_output: bool,
) -> anyhow::Result<()> {
    sse::tail(args.stream, gateway, Printer::new(json_output, args.count)).await
}

pub use sse::Gateway;

/// One event, decoded.
pub enum Event {
    Order(OrderEvent),
    Stock(StockEvent),
}

/// Prints events once per id, and counts them against `--count`.
pub struct Printer {
    json: bool,
    seen: Seen,
    printed: usize,
    count: Option<usize>,
}

impl Printer {
    fn new(json: bool, count: Option<usize>) -> Self {
        Self {
            json,
            seen: Seen::default(),
            printed: 0,
            count,
        }
    }

    /// Prints `event` (or, for `None`, that `subject` carried something else)
    /// unless an event of its id was printed before.
    fn print(&mut self, subject: &str, event: Option<&Event>) -> anyhow::Result<()> {
        match event.and_then(|event| render(subject, event, self.json)) {
            Some((id, line)) => {
                if !self.seen.insert(id) {
                    return Ok(());
                }
                say!("{line}");
            }
            None => say!("{subject} (not an ordermesh event)"),
        }
        self.printed += 1;
        Ok(())
    }

    /// How many more events are wanted; None: no end.
    fn wanted(&self) -> Option<usize> {
        self.count.map(|count| count.saturating_sub(self.printed))
    }

    fn done(&self) -> bool {
        self.wanted() == Some(0)
    }
}

/// The event's id and its line, or None for an event without a header.
fn render(subject: &str, event: &Event, json_output: bool) -> Option<(String, String)> {
    match event {
        Event::Stock(event) => {
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
            Some((header.event_id, line))
        }
        Event::Order(event) => {
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
    }
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
        let event = Event::Order(OrderEvent {
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
        });
        let (id, text) = render("ordermesh.orders.failed", &event, false).expect("an event");
        assert_eq!(
            text,
            "ordermesh.orders.failed ord_1 #2 FAILED CARD_DECLINED"
        );
        let (_, json) = render("ordermesh.orders.failed", &event, true).expect("an event");
        let json: Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(json["kind"], "ORDER_EVENT_KIND_FAILED");
        assert_eq!(json["eventId"], "ev-1");
        assert!(render("x", &Event::Stock(StockEvent::default()), false).is_none());

        let mut seen = Seen::default();
        assert!(seen.insert(id.clone()));
        assert!(!seen.insert(id), "a redelivery is skipped");
    }

    #[test]
    fn a_count_ends_the_tail_after_that_many_distinct_events() {
        let mut printer = Printer::new(true, Some(1));
        assert_eq!(printer.wanted(), Some(1));
        let event = Event::Stock(StockEvent {
            header: Some(EventHeader {
                event_id: "ev-9".into(),
                ..EventHeader::default()
            }),
            ..StockEvent::default()
        });
        printer
            .print("ordermesh.stock.changed", Some(&event))
            .unwrap();
        assert!(printer.done());
        // Printed again, it is skipped and not counted.
        let mut printer = Printer::new(true, Some(2));
        printer
            .print("ordermesh.stock.changed", Some(&event))
            .unwrap();
        printer
            .print("ordermesh.stock.changed", Some(&event))
            .unwrap();
        assert_eq!(printer.wanted(), Some(1));
    }
}
