//! Logging for every role: one JSON object per line on stdout by default
//! (`ts`, `level`, `msg`, `target`, `service`, and inside a request its
//! `trace_id`, `span_id`, `request_id` and `method`, plus the event's own
//! fields), or readable text with `--log-format text`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written to stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for machines.
    #[default]
    Json,
    /// Human-readable lines, for a local terminal.
    Text,
}

/// Installs the global subscriber. The level comes from `RUST_LOG`, then
/// `LOG_LEVEL`, then "info". `service` names lines logged outside any
/// request (start-up, background work); in `all` it is "ordermesh".
pub fn init(format: LogFormat, service: &'static str) {
    init_to(format, service, BoxMakeWriter::new(std::io::stdout));
}

/// As [`init`], with log lines on stderr: for commands whose stdout is
/// their output (`ordermesh audit --json`).
pub fn init_for_command(format: LogFormat, service: &'static str) {
    init_to(format, service, BoxMakeWriter::new(std::io::stderr));
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
            .fmt_fields(JsonFields::new())
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
