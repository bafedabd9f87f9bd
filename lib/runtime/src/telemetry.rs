//! Logging for every role: one JSON object per line on stdout (`ts`,
//! `level`, `msg`, `target`, `service`, and inside a request its
//! `trace_id`, `span_id`, `request_id` and `method`, plus the event's own
//! fields), or readable text: `--log-format`, else text on a terminal and
//! JSON when stdout is a pipe or a file.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

mod line;

/// How log lines are written to stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for machines.
    Json,
    /// Human-readable lines, for a local terminal.
    Text,
}

/// Installs the global subscriber. The level comes from `RUST_LOG`, then
/// `LOG_LEVEL`, then "info". `service` names lines logged outside any
/// request (start-up, background work); in `all` it is "ordermesh".
/// With no format given, lines are text when stdout is a terminal (a
/// person is reading) and JSON otherwise (a log pipeline is).
pub fn init(format: Option<LogFormat>, service: &'static str) {
    let format = format.unwrap_or_else(|| detect(std::io::stdout().is_terminal()));
    init_to(format, service, BoxMakeWriter::new(std::io::stdout));
}

/// As [`init`], with log lines on stderr: for commands whose stdout is
/// their output (`ordermesh audit --json`).
pub fn init_for_command(format: Option<LogFormat>, service: &'static str) {
    let format = format.unwrap_or_else(|| detect(std::io::stderr().is_terminal()));
    init_to(format, service, BoxMakeWriter::new(std::io::stderr));
}

fn detect(terminal: bool) -> LogFormat {
    if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    }
}

fn init_to(format: LogFormat, service: &'static str, writer: BoxMakeWriter) {
    let filter = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("LOG_LEVEL"))
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // A second init (tests start several apps in one process) keeps the first.
    let _ = match format {
        LogFormat::Json => builder
            .fmt_fields(SpanFieldsJson)
            .event_format(JsonLines::new(service))
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The JSON line format. tracing-subscriber's own JSON nests span fields
/// and names keys its way; operators' log pipelines expect flat, fixed keys.
struct JsonLines {
    /// The `service` value of lines outside any request, as JSON.
    service: String,
}

impl JsonLines {
    fn new(service: &str) -> Self {
        let mut quoted = String::with_capacity(service.len() + 2);
        let _ = push_json_string(&mut quoted, service);
        Self { service: quoted }
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        use std::fmt::Write as _;
        let metadata = event.metadata();
        let mut ts = String::with_capacity(32);
        ts.push('"');
        write!(
            ts,
            "{}",
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
        )?;
        ts.push('"');
        let mut target = String::with_capacity(metadata.target().len() + 2);
        push_json_string(&mut target, metadata.target())?;
        // The enclosing spans, outermost first, so inner ones win; their
        // fields are borrowed from the spans while the line is written.
        let spans: Vec<_> = ctx
            .event_scope()
            .map(|scope| scope.from_root().collect())
            .unwrap_or_default();
        let extensions: Vec<_> = spans.iter().map(|span| span.extensions()).collect();
        let mut line = line::LineFields::starting_with([
            ("ts", ts.into()),
            ("level", level_json(*metadata.level()).into()),
            ("msg", "".into()),
            ("target", target.into()),
            ("service", self.service.as_str().into()),
        ]);
        for extension in &extensions {
            if let Some(fields) = extension.get::<FormattedFields<N>>() {
                line.add_span_fields(fields);
            }
        }
        line.add_event_fields(event);
        line.write(&mut writer)?;
        writeln!(writer)
    }
}

/// A level as its JSON string.
fn level_json(level: tracing::Level) -> &'static str {
    match level {
        tracing::Level::ERROR => "\"ERROR\"",
        tracing::Level::WARN => "\"WARN\"",
        tracing::Level::INFO => "\"INFO\"",
        tracing::Level::DEBUG => "\"DEBUG\"",
        tracing::Level::TRACE => "\"TRACE\"",
    }
}

/// Span fields as one JSON object, written straight out.
///
/// Every request opens a span, and the fmt layer formats its fields when the
/// span opens, whether or not a line is ever logged inside it.
/// tracing-subscriber's `JsonFields` goes through a map of `serde_json`
/// values: two thirds of the span's cost and 6 % of a GetOrder's
/// instructions in callgrind. `JsonLines` reads the object back only when
/// it writes a line.
struct SpanFieldsJson;

impl<'writer> FormatFields<'writer> for SpanFieldsJson {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut object = JsonObject::with_capacity(SPAN_FIELDS_CAPACITY);
        fields.record(&mut object);
        writer.write_str(&object.finish())
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        let mut object = JsonObject::default();
        fields.record(&mut object);
        if object.is_empty() {
            return Ok(());
        }
        // Reopen the object and append: a key recorded twice appears twice,
        // and the later one wins when the line is written.
        if current.fields.ends_with('}') && current.fields.len() > 2 {
            current.fields.pop();
            current.fields.push(',');
            current.fields.push_str(&object.finish()[1..]);
        } else {
            current.fields = object.finish();
        }
        Ok(())
    }
}

/// Room for a request span's fields (service, method, trace, span and
/// request ids: about 190 bytes), so they are written without regrowing.
const SPAN_FIELDS_CAPACITY: usize = 256;

/// `{"name":value,…}` built by visiting fields.
#[derive(Default)]
struct JsonObject {
    text: String,
}

impl JsonObject {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            text: String::with_capacity(capacity),
        }
    }

    fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    fn key(&mut self, field: &Field) {
        self.text.push(if self.text.is_empty() { '{' } else { ',' });
        let _ = push_json_string(&mut self.text, field.name());
        self.text.push(':');
    }

    fn finish(mut self) -> String {
        if self.text.is_empty() {
            return "{}".to_owned();
        }
        self.text.push('}');
        self.text
    }
}

impl Visit for JsonObject {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        let _ = push_json_string(&mut self.text, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        use std::fmt::Write;
        self.key(field);
        let _ = write!(self.text, "{value}");
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        use std::fmt::Write;
        self.key(field);
        let _ = write!(self.text, "{value}");
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.text.push_str(if value { "true" } else { "false" });
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        push_json_debug(&mut self.text, value);
    }
}

/// `value`'s `Debug` text as a JSON string, written in place and escaped
/// afterwards only if it needs it (ids, names and numbers, the usual
/// fields, never do).
fn push_json_debug(out: &mut String, value: &dyn fmt::Debug) {
    use std::fmt::Write;
    let start = out.len();
    out.push('"');
    let _ = write!(out, "{value:?}");
    if needs_escape(&out[start + 1..]) {
        let text = out.split_off(start + 1);
        out.truncate(start);
        let _ = push_json_string(out, &text);
    } else {
        out.push('"');
    }
}

/// Whether `value` holds a character a JSON string must escape.
fn needs_escape(value: &str) -> bool {
    value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `value` as a JSON string literal: as it is when nothing needs escaping,
/// else quoted and escaped by serde_json.
fn push_json_string(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    if !needs_escape(value) {
        out.write_char('"')?;
        out.write_str(value)?;
        return out.write_char('"');
    }
    match serde_json::to_string(value) {
        Ok(quoted) => out.write_str(&quoted),
        Err(_) => out.write_str("null"),
    }
}

#[cfg(test)]
mod span_field_tests {
    use super::*;
    use serde_json::Value;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn span_fields_are_a_json_object_and_recorded_fields_join_it() {
        let (subscriber, lines) = json_lines("test");
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                method = "/a.B/C",
                quote = %"say \"hi\"\n",
                count = 3_u64,
                ok = true,
                later = tracing::field::Empty,
            );
            span.record("later", "now");
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside");
        });
        let text = lines.lock().unwrap().clone();
        let line: Value = serde_json::from_slice(&text).expect("one JSON line");
        assert_eq!(line["method"], "/a.B/C");
        assert_eq!(line["quote"], "say \"hi\"\n");
        assert_eq!(line["count"], 3);
        assert_eq!(line["ok"], true);
        assert_eq!(line["later"], "now");
        assert_eq!(line["answer"], 42);
        assert_eq!(line["msg"], "inside");
    }

    #[test]
    fn a_line_names_each_key_once_inner_spans_and_the_event_winning() {
        let (subscriber, lines) = json_lines("ordermesh");
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!("request", service = "order", order_id = "o-1");
            let _outer = outer.enter();
            let inner = tracing::info_span!("step", order_id = "o-2", step = 3_u64);
            let _inner = inner.enter();
            tracing::warn!(step = "charge", ratio = 0.5, "a \"quoted\" message");
            tracing::info!(plain = true);
        });
        let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        let shapes: Vec<&str> = text
            .lines()
            .map(|line| line.split_once(r#"","level""#).expect("ts first").1)
            .collect();
        let target = r#""target":"ordermesh_runtime::telemetry::span_field_tests""#;
        assert_eq!(
            shapes,
            [
                format!(
                    r#":"WARN","msg":"a \"quoted\" message",{target},"service":"order","order_id":"o-2","step":"charge","ratio":0.5}}"#
                ),
                format!(
                    r#":"INFO",{target},"service":"order","order_id":"o-2","step":3,"plain":true}}"#
                ),
            ]
        );
        for line in text.lines() {
            let ts = serde_json::from_str::<Value>(line).expect("a JSON line")["ts"].clone();
            assert!(ts.as_str().is_some_and(|ts| ts.ends_with('Z')), "{line}");
        }
    }

    type Captured = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

    /// A subscriber writing JSON lines as the roles do, into a buffer.
    fn json_lines(service: &'static str) -> (impl Subscriber + Send + Sync, Captured) {
        let (writer, lines) = capture();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(SpanFieldsJson)
                .event_format(JsonLines::new(service))
                .with_writer(writer),
        );
        (subscriber, lines)
    }

    fn capture() -> (BoxMakeWriter, Captured) {
        struct Sink(Captured);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Captured::default();
        let sink = lines.clone();
        (BoxMakeWriter::new(move || Sink(sink.clone())), lines)
    }
}
