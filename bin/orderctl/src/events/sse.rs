//! The gateway source: `GET /v1/events:watch` (or `/v1/events/stock:watch`)
//! read as Server-Sent Events. Each event's `id:` is its cursor; when the
//! feed drops (the connection breaks, the gateway ends a long or idle watch,
//! a service restarts) the tail connects again with `Last-Event-ID` set to
//! the last id it read, so the gateway resumes after it. Tries back off from
//! 200 ms to 5 s and end after [`MAX_TRIES`] in a row that bring no event.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ordermesh_proto::events::v1::{WatchEventsResponse, watch_events_response};
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor};
use tonic::Code;

use super::{Event, Printer};
use crate::cli::EventStream;

/// Consecutive tries without an event before the tail gives up.
const MAX_TRIES: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The gateway sends a keep-alive comment every 15 s; a feed silent three
/// times as long is a dead connection that TCP has not noticed yet.
const SILENCE: Duration = Duration::from_secs(45);
/// An error answer's body is read up to this much.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Where the feed is, and who asks.
pub struct Gateway<'a> {
    /// The gateway's base URL (`--gateway-url`).
    pub url: &'a str,
    /// An operator's token (`orders:admin`).
    pub token: &'a str,
    /// Longest wait for a connection and the response's head.
    pub connect_timeout: Duration,
}

pub async fn tail(
    stream: EventStream,
    gateway: &Gateway<'_>,
    mut printer: Printer,
) -> anyhow::Result<()> {
    let path = match stream {
        EventStream::Orders => "/v1/events:watch",
        EventStream::Stock => "/v1/events/stock:watch",
    };
    let uri: http::Uri = format!("{}{path}", gateway.url.trim_end_matches('/'))
        .parse()
        .with_context(|| format!("{:?} is not a URL", gateway.url))?;
    let feed = Feed {
        client: Client::builder(TokioExecutor::new()).build_http(),
        uri,
        gateway,
        response: response_descriptor()?,
    };
    let mut last_id: Option<String> = None;
    let mut tries = 0;
    loop {
        let Ended::Dropped { events, why } = feed.follow(&mut last_id, &mut printer).await? else {
            return Ok(());
        };
        if events > 0 {
            tries = 0;
        }
        tries += 1;
        if tries > MAX_TRIES {
            bail!("gave up after {MAX_TRIES} tries in a row without an event: {why}");
        }
        let delay = backoff(tries);
        eprintln!(
            "orderctl: {why}; again in {} after event {}",
            humantime::format_duration(delay),
            last_id.as_deref().unwrap_or("(none yet)")
        );
        tokio::time::sleep(delay).await;
    }
}

/// The wait before try `tries` (1, 2…): doubling from [`FIRST_BACKOFF`],
/// at most [`MAX_BACKOFF`].
fn backoff(tries: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << tries.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

/// How one connection ended.
#[derive(Debug)]
enum Ended {
    /// `--count` events were printed.
    Done,
    /// The feed went away after `events` events; another try may go on.
    Dropped { events: usize, why: String },
}

fn dropped(events: usize, why: impl Into<String>) -> anyhow::Result<Ended> {
    Ok(Ended::Dropped {
        events,
        why: why.into(),
    })
}

struct Feed<'a> {
    client: Client<HttpConnector, Empty<Bytes>>,
    uri: http::Uri,
    gateway: &'a Gateway<'a>,
    response: MessageDescriptor,
}

impl Feed<'_> {
    /// One connection: prints its events and moves `last_id` along; an
    /// error is one no new try would change (a refused token, a bad answer).
    async fn follow(
        &self,
        last_id: &mut Option<String>,
        printer: &mut Printer,
    ) -> anyhow::Result<Ended> {
        let mut body = match self.open(last_id.as_deref()).await? {
            Ok(body) => body,
            Err(why) => return dropped(0, why),
        };
        let mut parser = SseParser::default();
        let mut events = 0;
        loop {
            let frame = match tokio::time::timeout(SILENCE, body.frame()).await {
                Err(_) => {
                    return dropped(events, format!("nothing from the gateway for {SILENCE:?}"));
                }
                Ok(None) => return dropped(events, "the gateway ended the feed"),
                Ok(Some(Err(error))) => return dropped(events, format!("the feed broke: {error}")),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for message in parser.push(&data) {
                if message.event.as_deref() == Some("error") {
                    let (code, text) = error_event(&message.data);
                    if resumable(code) {
                        return dropped(events, text);
                    }
                    bail!("the gateway ended the feed: {text}");
                }
                let response = decode(&self.response, &message.data)?;
                let event = match response.event {
                    Some(watch_events_response::Event::Order(event)) => Some(Event::Order(event)),
                    Some(watch_events_response::Event::Stock(event)) => Some(Event::Stock(event)),
                    None => None,
                };
                printer.print(&response.subject, event.as_ref())?;
                events += 1;
                if message.id.is_some() {
                    *last_id = message.id;
                }
                if printer.done() {
                    return Ok(Ended::Done);
                }
            }
        }
    }

    /// The feed's body, resuming after `last_id`; `Ok(Err(why))` when
    /// another try may get it, an error when none would.
    async fn open(
        &self,
        last_id: Option<&str>,
    ) -> anyhow::Result<Result<hyper::body::Incoming, String>> {
        let mut request = http::Request::get(self.uri.clone())
            .header(http::header::ACCEPT, "text/event-stream")
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.gateway.token),
            );
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        let request = request
            .body(Empty::new())
            .context("the token is not printable ASCII")?;
        let wait = self.gateway.connect_timeout;
        let response = match tokio::time::timeout(wait, self.client.request(request)).await {
            Err(_) => return Ok(Err(format!("no answer from {} within {wait:?}", self.uri))),
            Ok(Err(error)) => return Ok(Err(format!("GET {}: {error}", self.uri))),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(Ok(response.into_body()));
        }
        let body = http_body_util::Limited::new(response.into_body(), ERROR_BODY_LIMIT);
        let message = match tokio::time::timeout(wait, body.collect()).await {
            Ok(Ok(body)) => error_message(&body.to_bytes()),
            _ => String::new(),
        };
        let refusal = format!("GET {}: HTTP {status}: {message}", self.uri);
        if retryable(status) {
            return Ok(Err(refusal));
        }
        if matches!(status.as_u16(), 401 | 403) {
            bail!("{refusal} (the feed needs an operator: `orderctl login --admin NAME`)");
        }
        bail!(refusal)
    }
}

/// The gateway's answers that a later try may not get: overloaded (429),
/// or the gateway or the service away or slow.
fn retryable(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// The codes of a mid-feed error after which the feed goes on elsewhere:
/// the gateway's longest life or idle limit (DEADLINE_EXCEEDED), a service
/// gone away (UNAVAILABLE).
fn resumable(code: Code) -> bool {
    matches!(
        code,
        Code::DeadlineExceeded | Code::Unavailable | Code::ResourceExhausted
    )
}

/// `message` of a `google.rpc.Status` JSON body, else the body as text.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|status| status["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

/// The code and message of an `event: error`'s `google.rpc.Status`.
fn error_event(data: &str) -> (Code, String) {
    let status: serde_json::Value = serde_json::from_str(data).unwrap_or_default();
    let code = status["code"]
        .as_i64()
        .and_then(|code| i32::try_from(code).ok())
        .map_or(Code::Unknown, Code::from_i32);
    let message = status["message"].as_str().unwrap_or(data).to_owned();
    (code, format!("{code:?}: {message}"))
}

fn response_descriptor() -> anyhow::Result<MessageDescriptor> {
    DescriptorPool::decode(ordermesh_proto::FILE_DESCRIPTOR_SET)
        .context("ordermesh's descriptors")?
        .get_message_by_name("ordermesh.events.v1.WatchEventsResponse")
        .context("WatchEventsResponse is in ordermesh's descriptors")
}

/// One `data:` as the gateway writes it (proto3 JSON), as the message.
/// Fields this orderctl does not know are ignored: payloads only grow.
fn decode(descriptor: &MessageDescriptor, data: &str) -> anyhow::Result<WatchEventsResponse> {
    let mut json = serde_json::Deserializer::from_str(data);
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let message = DynamicMessage::deserialize_with_options(descriptor.clone(), &mut json, &options)
        .with_context(|| {
            format!("an event the gateway sent is not a WatchEventsResponse: {data}")
        })?;
    message
        .transcode_to()
        .context("an event the gateway sent does not decode")
}

/// One dispatched Server-Sent Event.
#[derive(Debug, Default, PartialEq)]
struct SseMessage {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Server-Sent Events from a byte stream cut anywhere (the WHATWG
/// `text/event-stream` rules that the gateway's output needs: `id`,
/// `event`, `data` and comments, lines ended by LF or CRLF). Written here
/// rather than taken from `eventsource-stream`, which yields only events:
/// the tail's dead-connection check counts every frame, keep-alive
/// comments included, and reads the body frame by frame to see them.
/// Wrapping the byte stream in a timeout before that crate would do too;
/// this parser is thirty lines and tested below.
#[derive(Default)]
struct SseParser {
    pending: Vec<u8>,
    current: SseMessage,
    has_data: bool,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<SseMessage> {
        self.pending.extend_from_slice(bytes);
        let mut messages = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let message = std::mem::take(&mut self.current);
                // An event with no data is not dispatched (an `id:` alone).
                if std::mem::take(&mut self.has_data) {
                    messages.push(message);
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = Some(value.to_owned()),
                "event" => self.current.event = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                // Comments (`: keep-alive`), `retry` and the unknown.
                _ => {}
            }
        }
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_across_cuts_and_line_ends() {
        let mut parser = SseParser::default();
        assert!(
            parser
                .push(b": keep-alive\n\nid: 4\ndata: {\"a\"")
                .is_empty()
        );
        let got = parser.push(b":1}\r\n\r\nevent: error\ndata: x\ndata: y\n\n");
        assert_eq!(
            got,
            [
                SseMessage {
                    id: Some("4".into()),
                    event: None,
                    data: "{\"a\":1}".into(),
                },
                SseMessage {
                    id: None,
                    event: Some("error".into()),
                    data: "x\ny".into(),
                },
            ]
        );
        assert!(parser.push(b"id: 9\n\n").is_empty(), "no data, no event");
    }

    #[test]
    fn tries_back_off_to_a_ceiling() {
        let waits: Vec<Duration> = (1..=7).map(backoff).collect();
        assert_eq!(waits[0], Duration::from_millis(200));
        assert_eq!(waits[1], Duration::from_millis(400));
        assert_eq!(waits[4], Duration::from_millis(3200));
        assert_eq!(waits[5], MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_watch_ended_by_time_resumes_and_a_refusal_does_not() {
        let (code, text) =
            error_event(r#"{"code":4,"message":"nothing changed for 10m; watch again to go on"}"#);
        assert!(resumable(code), "{text}");
        let (code, _) = error_event(r#"{"code":7,"message":"no"}"#);
        assert!(!resumable(code));
        assert_eq!(error_event("garbage").0, Code::Unknown);
        assert!(retryable(http::StatusCode::SERVICE_UNAVAILABLE));
        assert!(!retryable(http::StatusCode::FORBIDDEN));
        assert_eq!(error_message(br#"{"code":16,"message":"who?"}"#), "who?");
    }

    #[test]
    fn the_gateways_json_is_the_event_nats_carries() {
        let data = r#"{"cursor":"3","subject":"ordermesh.stock.changed","stock":{"header":{"eventId":"ev-3","aggregateId":"sku-mug","sequence":"2","occurredAt":"2026-01-02T03:04:05Z"},"kind":"STOCK_EVENT_KIND_CHANGED","productId":"sku-mug","available":"9","delta":"-1","addedLater":true}}"#;
        let response = decode(&response_descriptor().unwrap(), data).expect("decodes");
        assert_eq!(response.cursor, "3");
        let Some(watch_events_response::Event::Stock(stock)) = response.event else {
            panic!("a stock event: {response:?}");
        };
        let (id, line) =
            super::super::render(&response.subject, &Event::Stock(stock), false).unwrap();
        assert_eq!(id, "ev-3");
        assert_eq!(
            line,
            "ordermesh.stock.changed sku-mug #2 available=9 delta=-1"
        );
        assert!(decode(&response_descriptor().unwrap(), "{").is_err());
    }
}
