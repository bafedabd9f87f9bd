//! OpenTelemetry tracing: one tracer per role (so in `all` each role still
//! reports under its own service name), W3C trace context in and out, B3 and
//! `x-request-id` honoured on the way in.
//!
//! Spans are exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; otherwise they are still
//! made, so log lines carry trace and span ids, but go nowhere.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, OnceLock};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, Tracer};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request id a call carries, kept in the OpenTelemetry context so the
/// outgoing calls it makes forward it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

static PROVIDERS: LazyLock<Mutex<HashMap<&'static str, SdkTracerProvider>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// `OTEL_SERVICE_NAME` names the service only in a one-role process; in
/// `all` every role keeps its own name, as it would in the mesh.
static SINGLE_ROLE: OnceLock<bool> = OnceLock::new();

/// Declares whether this process runs one role (then `OTEL_SERVICE_NAME`
/// applies) or several.
pub fn set_single_role(single: bool) {
    let _ = SINGLE_ROLE.set(single);
}

fn service_name(role: &str) -> String {
    let single = SINGLE_ROLE.get().copied().unwrap_or(false);
    match std::env::var("OTEL_SERVICE_NAME") {
        Ok(name) if single && !name.is_empty() => name,
        _ => role.to_owned(),
    }
}

fn export_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty()))
}

/// The tracer of `role`, made on first use.
pub fn tracer(role: &'static str) -> Tracer {
    let mut providers = PROVIDERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    providers
        .entry(role)
        .or_insert_with(|| provider(&service_name(role)))
        .tracer("ordermesh")
}

fn provider(service: &str) -> SdkTracerProvider {
    let mut builder = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service.to_owned())
            .build(),
    );
    if export_configured() {
        // The blocking HTTP client runs on the batch processor's own thread,
        // so export never competes with request handling for the runtime.
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(error) => {
                tracing::warn!(%error, service, "cannot export traces; continuing without")
            }
        }
    }
    builder.build()
}

/// Flushes and stops every tracer; call once before the process exits.
pub fn shutdown() {
    let providers = PROVIDERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for (role, provider) in providers.iter() {
        if let Err(error) = provider.shutdown() {
            tracing::debug!(%error, role, "tracer shutdown");
        }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The caller's trace context (W3C `traceparent`, else B3) and request id.
pub fn extract(headers: &HeaderMap) -> Context {
    let w3c = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let cx = if w3c.span().span_context().is_valid() {
        w3c
    } else {
        match b3(headers) {
            Some(remote) => Context::new().with_remote_span_context(remote),
            None => Context::new(),
        }
    };
    match headers.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() && id.len() <= 128 => cx.with_value(RequestId(id.to_owned())),
        _ => cx,
    }
}

/// Writes `cx`'s trace context and request id into outgoing headers.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
    if let Some(RequestId(id)) = cx.get::<RequestId>()
        && let Ok(value) = HeaderValue::try_from(id.as_str())
    {
        headers.insert(REQUEST_ID_HEADER, value);
    }
}

/// B3 as Envoy and Zipkin send it: the single `b3` header or the
/// `x-b3-*` set. The propagator crate for it comes with a whole HTTP and TLS
/// stack for Zipkin export, too much for these few lines of parsing.
fn b3(headers: &HeaderMap) -> Option<SpanContext> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (trace_id, span_id, sampled) = match get("b3") {
        Some(single) => {
            let mut parts = single.split('-');
            (parts.next()?, parts.next()?, parts.next())
        }
        None => (
            get("x-b3-traceid")?,
            get("x-b3-spanid")?,
            get("x-b3-sampled"),
        ),
    };
    // A 64-bit B3 trace id is the low half of a 128-bit one.
    let trace_id = TraceId::from_hex(&format!("{trace_id:0>32}")).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = match sampled {
        Some("0") => TraceFlags::default(),
        _ => TraceFlags::SAMPLED,
    };
    let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn w3c_round_trips() {
        let incoming = headers(&[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-request-id", "req-1"),
        ]);
        let cx = extract(&incoming);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let mut outgoing = HeaderMap::new();
        inject(&cx, &mut outgoing);
        assert!(
            outgoing["traceparent"]
                .to_str()
                .unwrap()
                .contains("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(outgoing["x-request-id"], "req-1");
    }

    #[test]
    fn b3_is_honoured_when_there_is_no_traceparent() {
        let multi = extract(&headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ]));
        assert_eq!(
            multi.span().span_context().trace_id().to_string(),
            "0000000000000000463ac35c9f6413ad"
        );
        let single = extract(&headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
        )]));
        assert_eq!(
            single.span().span_context().span_id().to_string(),
            "e457b5a2e4d86bd1"
        );
        assert!(
            !extract(&headers(&[("b3", "garbage")]))
                .span()
                .span_context()
                .is_valid()
        );
    }
}
