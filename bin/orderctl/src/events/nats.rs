//! The NATS source: a durable pull consumer with explicit acks. An event is
//! acked once printed (or skipped as printed before), so a later run with
//! the same `--durable` resumes after the last acked one.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use ordermesh_proto::events::v1::{OrderEvent, StockEvent};
use prost::Message;

use super::{Event, Printer};
use crate::cli::{EventStream, TailArgs};

pub async fn tail(args: &TailArgs, mut printer: Printer) -> anyhow::Result<()> {
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
    while !printer.done() {
        // Pull no more than is still wanted: a message pulled but not
        // acked would wait out its ack wait before the next run got it.
        let wanted = printer.wanted().unwrap_or(256);
        let mut batch = consumer
            .batch()
            .max_messages(wanted)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .context("pulling events")?;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("receiving an event: {e}"))?;
            printer.print(
                &message.subject,
                decode(&message.subject, &message.payload).as_ref(),
            )?;
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

/// The payload as the event its subject names, or None if it is not one.
fn decode(subject: &str, payload: &[u8]) -> Option<Event> {
    if subject.starts_with("ordermesh.stock.") {
        return StockEvent::decode(payload).ok().map(Event::Stock);
    }
    OrderEvent::decode(payload).ok().map(Event::Order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_decode_by_subject() {
        let stock = StockEvent {
            product_id: "sku-mug".into(),
            ..StockEvent::default()
        };
        let payload = stock.encode_to_vec();
        assert!(matches!(
            decode("ordermesh.stock.changed", &payload),
            Some(Event::Stock(event)) if event.product_id == "sku-mug"
        ));
        assert!(decode("ordermesh.orders.placed", b"\xff\xff").is_none());
    }
}
