//! Logging for every role: one JSON object per line on stdout (`ts`,
//! `level`, `msg`, `target`, `service`, and inside a request its
//! `trace_id`, `span_id`, `request_id` and `method`, plus the event's own
//! fields), or readable text: `--log-format`, else text on a terminal and
//! JSON when stdout is a pipe or a file.

use std::fmt;
use std::io::IsTerminal;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

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
            .event_format(JsonLines { service })
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The JSON line format. tracing-subscriber's own JSON nests span fields
/// and names keys its way; operators' log pipelines expect flat, fixed keys.
struct JsonLines {
    service: &'static str,
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
        let metadata = event.metadata();
        let mut line = Map::new();
        line.insert(
            "ts".into(),
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("target".into(), metadata.target().into());
        line.insert("service".into(), self.service.into());
        // Fields of the enclosing spans, outermost first, so inner ones win.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields)
                {
                    line.extend(fields);
                }
            }
        }
        let mut visitor = Fields(&mut line);
        event.record(&mut visitor);
        if let Some(message) = line.remove("message") {
            line.insert("msg".into(), message);
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
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
        let mut object = JsonObject::default();
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

/// `{"name":value,…}` built by visiting fields.
#[derive(Default)]
struct JsonObject {
    text: String,
    scratch: String,
}

impl JsonObject {
    fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    fn key(&mut self, field: &Field) {
        self.text.push(if self.text.is_empty() { '{' } else { ',' });
        push_json_string(&mut self.text, field.name());
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
        push_json_string(&mut self.text, value);
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
        use std::fmt::Write;
        self.key(field);
        // Written in place; escaped afterwards only if it needs it (ids,
        // names and numbers, the usual span fields, never do).
        let start = self.text.len();
        self.text.push('"');
        let _ = write!(self.text, "{value:?}");
        if needs_escape(&self.text[start + 1..]) {
            self.scratch.clear();
            self.scratch.push_str(&self.text[start + 1..]);
            self.text.truncate(start);
            let scratch = std::mem::take(&mut self.scratch);
            push_json_string(&mut self.text, &scratch);
            self.scratch = scratch;
        } else {
            self.text.push('"');
        }
    }
}

/// Whether `value` holds a character a JSON string must escape.
fn needs_escape(value: &str) -> bool {
    value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `value` as a JSON string literal: as it is when nothing needs escaping,
/// else quoted and escaped by serde_json.
fn push_json_string(out: &mut String, value: &str) {
    if !needs_escape(value) {
        out.push('"');
        out.push_str(value);
        out.push('"');
        return;
    }
    match serde_json::to_string(value) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("null"),
    }
}

#[cfg(test)]
mod span_field_tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn span_fields_are_a_json_object_and_recorded_fields_join_it() {
        let (writer, lines) = capture();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(SpanFieldsJson)
                .event_format(JsonLines { service: "test" })
                .with_writer(writer),
        );
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

    type Captured = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

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
