//! OpenTelemetry tracing: one tracer per role (so in `all` each role still
//! reports under its own service name), W3C trace context in and out, B3 and
//! `x-request-id` honoured on the way in. Tracers belong to an App
//! ([`Tracers`] in its `AppContext`), not to the process.
//!
//! Spans are exported over OTLP when an endpoint is set (the OpenTelemetry
//! specification's `OTEL_EXPORTER_OTLP_*` variables, or the flags of
//! [`TraceSettings`]), by gRPC or HTTP/protobuf as
//! `OTEL_EXPORTER_OTLP_PROTOCOL` says; otherwise a call's span is only its
//! ids ([`unexported_span`]), so log lines and outgoing calls still carry
//! trace and span ids. Headers, timeout and compression are read by the
//! exporter itself from the same variables.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider, Tracer};

pub const REQUEST_ID_HEADER: &str = "x-request-id";
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The request id a call carries, kept in the OpenTelemetry context so the
/// outgoing calls it makes forward it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The OTLP transport, by the specification's names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (collectors and Jaeger listen on 4317).
    #[value(name = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318), the specification's default.
    #[default]
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// Where spans go. Every flag reads the OpenTelemetry variable of the same
/// meaning, so a collector set up for any OpenTelemetry SDK works as is.
#[derive(Clone, Debug, clap::Args)]
pub struct TraceSettings {
    /// OTLP base endpoint (`/v1/traces` is added for HTTP); unset, spans
    /// are not exported.
    #[arg(
        long = "otlp-endpoint",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        hide_env_values = true
    )]
    pub endpoint: Option<String>,
    /// OTLP endpoint for traces, used as given (wins over --otlp-endpoint).
    #[arg(
        long = "otlp-traces-endpoint",
        env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        hide_env_values = true
    )]
    pub traces_endpoint: Option<String>,
    /// OTLP transport.
    #[arg(long = "otlp-protocol", env = "OTEL_EXPORTER_OTLP_PROTOCOL", value_enum, default_value_t = OtlpProtocol::HttpProtobuf)]
    pub protocol: OtlpProtocol,
    /// OTLP transport for traces (wins over --otlp-protocol).
    #[arg(
        long = "otlp-traces-protocol",
        env = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        value_enum
    )]
    pub traces_protocol: Option<OtlpProtocol>,
    /// Service name of a one-role process (in `all` each role keeps its own).
    #[arg(long = "otel-service-name", env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,
}

impl Default for TraceSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

impl TraceSettings {
    /// The transport and the full traces URL, or None when nothing exports.
    pub fn export_target(&self) -> Option<(OtlpProtocol, String)> {
        let protocol = self.traces_protocol.unwrap_or(self.protocol);
        let nonempty = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        if let Some(url) = nonempty(&self.traces_endpoint) {
            return Some((protocol, url));
        }
        let base = nonempty(&self.endpoint)?;
        Some(match protocol {
            OtlpProtocol::Grpc => (protocol, base),
            OtlpProtocol::HttpProtobuf => (
                protocol,
                format!("{}/v1/traces", base.trim_end_matches('/')),
            ),
        })
    }
}

/// The tracer providers of one App, one per role.
#[derive(Clone, Debug)]
pub struct Tracers {
    settings: Arc<TraceSettings>,
    single_role: bool,
    providers: Arc<Mutex<HashMap<&'static str, SdkTracerProvider>>>,
}

impl Tracers {
    pub fn new(settings: TraceSettings, single_role: bool) -> Self {
        Self {
            settings: Arc::new(settings),
            single_role,
            providers: Arc::default(),
        }
    }

    fn service_name(&self, role: &str) -> String {
        match &self.settings.service_name {
            Some(name) if self.single_role && !name.is_empty() => name.clone(),
            _ => role.to_owned(),
        }
    }

    /// Whether spans go anywhere. When they do not, a call's span is only
    /// its ids ([`unexported_span`]): the SDK would build, fill and drop a
    /// recording span for nobody.
    pub fn exports(&self) -> bool {
        self.settings.export_target().is_some()
    }

    /// The tracer of `role`, made on first use.
    pub fn tracer(&self, role: &'static str) -> Tracer {
        let mut providers = self
            .providers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        providers
            .entry(role)
            .or_insert_with(|| self.provider(&self.service_name(role)))
            .tracer("ordermesh")
    }

    fn provider(&self, service: &str) -> SdkTracerProvider {
        let mut builder = SdkTracerProvider::builder().with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        );
        if let Some((protocol, endpoint)) = self.settings.export_target() {
            // Both run on the batch processor's own thread: the blocking
            // HTTP client needs no runtime; the gRPC channel was made on the
            // App's runtime, which drives it.
            let exporter = match protocol {
                OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .build(),
                OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(endpoint.clone())
                    .build(),
            };
            match exporter {
                Ok(exporter) => builder = builder.with_batch_exporter(exporter),
                Err(error) => {
                    tracing::warn!(%error, service, endpoint, "cannot export traces; continuing without")
                }
            }
        }
        builder.build()
    }

    /// Flushes and stops every tracer; call once when the App stops.
    pub fn shutdown(&self) {
        let providers = self
            .providers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (role, provider) in providers.iter() {
            if let Err(error) = provider.shutdown() {
                tracing::debug!(%error, role, "tracer shutdown");
            }
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
    let span = cx.span();
    let span_context = span.span_context();
    if let Some(value) = traceparent(span_context).and_then(|t| HeaderValue::try_from(t).ok()) {
        headers.insert(TRACEPARENT, value);
        // No empty tracestate (the W3C propagator sends one; it says
        // nothing), and none a caller sent that is not this trace's (the
        // gateway forwards the client's headers).
        match HeaderValue::try_from(span_context.trace_state().header()) {
            Ok(state) if !state.is_empty() => headers.insert(TRACESTATE, state),
            _ => headers.remove(TRACESTATE),
        };
    }
    if let Some(RequestId(id)) = cx.get::<RequestId>()
        && let Ok(value) = HeaderValue::try_from(id.as_str())
    {
        headers.insert(REQUEST_ID_HEADER, value);
    }
}

/// The W3C `traceparent` of the current span, if there is one: what an
/// outbox row keeps so its later publish joins the change's trace.
pub fn current_traceparent() -> Option<String> {
    traceparent(Context::current().span().span_context())
}

/// `00-<trace id>-<span id>-<flags>` as the W3C propagator writes it (its
/// `inject_context` is what the tests compare with), written with `hex`
/// into one buffer: the propagator's `format!` of the ids' padded integers
/// was 6 k instructions per outgoing call (callgrind), a tenth of what the
/// gateway adds to a call. None for an invalid span context.
fn traceparent(span_context: &SpanContext) -> Option<String> {
    if !span_context.is_valid() {
        return None;
    }
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let flags = [(span_context.trace_flags() & TraceFlags::SAMPLED).to_u8()];
    hex::encode_to_slice(span_context.trace_id().to_bytes(), &mut text[3..35]).ok()?;
    hex::encode_to_slice(span_context.span_id().to_bytes(), &mut text[36..52]).ok()?;
    hex::encode_to_slice(flags, &mut text[53..55]).ok()?;
    String::from_utf8(text.to_vec()).ok()
}

/// The span context of a call when nothing exports: the ids the SDK's
/// default sampler (parent-based, else always on) would give it, with no
/// span behind them. A child of a caller's span keeps its trace, state and
/// sampled flag; a call with no caller starts a sampled trace.
pub fn unexported_span(parent: &Context) -> SpanContext {
    let ids = RandomIdGenerator::default();
    let parent_span = parent.span();
    let caller = parent_span.span_context();
    let (trace_id, flags, state) = if caller.is_valid() {
        let flags = caller.trace_flags() & TraceFlags::SAMPLED;
        (caller.trace_id(), flags, caller.trace_state().clone())
    } else {
        (
            ids.new_trace_id(),
            TraceFlags::SAMPLED,
            TraceState::default(),
        )
    };
    SpanContext::new(trace_id, ids.new_span_id(), flags, false, state)
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
    use std::str::FromStr;

    use super::*;

    struct HeaderInjector<'a>(&'a mut HeaderMap);

    impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(
                HeaderName::try_from(key).unwrap(),
                HeaderValue::try_from(value).unwrap(),
            );
        }
    }

    fn span_context(trace: u128, span: u64, flags: TraceFlags, state: &str) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            flags,
            true,
            TraceState::from_str(state).unwrap(),
        )
    }

    #[test]
    fn traceparent_is_written_as_the_w3c_propagator_writes_it() {
        let cases = [
            span_context(1, 1, TraceFlags::SAMPLED, ""),
            span_context(u128::MAX, u64::MAX, TraceFlags::default(), "a=1,b=2"),
            span_context(
                0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                0x00f0_67aa_0ba9_02b7,
                TraceFlags::new(0xff),
                "vendor=x",
            ),
        ];
        for context in cases {
            let cx = Context::new().with_remote_span_context(context);
            let mut ours = HeaderMap::new();
            inject(&cx, &mut ours);
            let mut theirs = HeaderMap::new();
            TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut theirs));
            assert_eq!(ours["traceparent"], theirs["traceparent"]);
            // The propagator writes an empty tracestate; we leave it out.
            match theirs["tracestate"].to_str().unwrap() {
                "" => assert!(!ours.contains_key("tracestate")),
                state => assert_eq!(ours["tracestate"], state),
            }
            let back = extract(&ours);
            assert_eq!(
                back.span().span_context().trace_id(),
                cx.span().span_context().trace_id()
            );
        }
        let mut none = HeaderMap::new();
        inject(&Context::new(), &mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn a_callers_tracestate_goes_only_with_its_own_trace() {
        // Headers the gateway forwards: a client's tracestate whose
        // traceparent did not parse, so the call started a trace of its own.
        let mut outgoing = headers(&[("tracestate", "client=1")]);
        let fresh = Context::new().with_remote_span_context(unexported_span(&Context::new()));
        inject(&fresh, &mut outgoing);
        assert!(outgoing.contains_key("traceparent"));
        assert!(!outgoing.contains_key("tracestate"));
        let mut kept = headers(&[("tracestate", "client=1")]);
        let cx = Context::new().with_remote_span_context(span_context(
            3,
            4,
            TraceFlags::SAMPLED,
            "ours=2",
        ));
        inject(&cx, &mut kept);
        assert_eq!(kept["tracestate"], "ours=2");
    }

    /// What the SDK makes of `parent` with no processor (how every span was
    /// made before `unexported_span`).
    fn sdk_span(parent: &Context) -> SpanContext {
        use opentelemetry::trace::{Span as _, Tracer as _};
        let tracer = SdkTracerProvider::builder().build().tracer("test");
        let span = tracer.start_with_context("call", parent);
        span.span_context().clone()
    }

    #[test]
    fn an_unexported_span_has_the_ids_the_sdk_would_give_it() {
        let parents = [
            Context::new(),
            Context::new().with_remote_span_context(span_context(7, 9, TraceFlags::SAMPLED, "k=v")),
            Context::new().with_remote_span_context(span_context(7, 9, TraceFlags::default(), "")),
        ];
        for parent in &parents {
            let (ours, sdk) = (unexported_span(parent), sdk_span(parent));
            assert!(ours.is_valid() && sdk.is_valid());
            assert_eq!(ours.trace_flags(), sdk.trace_flags());
            assert_eq!(ours.trace_state(), sdk.trace_state());
            assert_eq!(ours.is_remote(), sdk.is_remote());
            let caller = parent.span().span_context().clone();
            if caller.is_valid() {
                assert_eq!(ours.trace_id(), caller.trace_id());
                assert_eq!(sdk.trace_id(), caller.trace_id());
            }
            assert_ne!(ours.span_id(), caller.span_id());
        }
        // Two calls with no caller start two traces.
        assert_ne!(
            unexported_span(&Context::new()).trace_id(),
            unexported_span(&Context::new()).trace_id()
        );
    }

    fn settings(
        endpoint: Option<&str>,
        traces: Option<&str>,
        protocol: OtlpProtocol,
    ) -> TraceSettings {
        TraceSettings {
            endpoint: endpoint.map(str::to_owned),
            traces_endpoint: traces.map(str::to_owned),
            protocol,
            ..TraceSettings::default()
        }
    }

    #[test]
    fn endpoints_follow_the_specification() {
        assert_eq!(TraceSettings::default().export_target(), None);
        assert_eq!(
            settings(Some("http://c:4318/"), None, OtlpProtocol::HttpProtobuf).export_target(),
            Some((
                OtlpProtocol::HttpProtobuf,
                "http://c:4318/v1/traces".to_owned()
            ))
        );
        assert_eq!(
            settings(Some("http://c:4317"), None, OtlpProtocol::Grpc).export_target(),
            Some((OtlpProtocol::Grpc, "http://c:4317".to_owned()))
        );
        assert_eq!(
            settings(
                Some("http://c:4318"),
                Some("http://t:1/x"),
                OtlpProtocol::HttpProtobuf
            )
            .export_target(),
            Some((OtlpProtocol::HttpProtobuf, "http://t:1/x".to_owned()))
        );
        let mut traces_grpc = settings(Some("http://c:4317"), None, OtlpProtocol::HttpProtobuf);
        traces_grpc.traces_protocol = Some(OtlpProtocol::Grpc);
        assert_eq!(
            traces_grpc.export_target().map(|t| t.0),
            Some(OtlpProtocol::Grpc)
        );
    }

    #[test]
    fn a_one_role_app_takes_the_service_name() {
        let named = TraceSettings {
            service_name: Some("order-eu".to_owned()),
            ..TraceSettings::default()
        };
        assert_eq!(
            Tracers::new(named.clone(), true).service_name("order"),
            "order-eu"
        );
        assert_eq!(Tracers::new(named, false).service_name("order"), "order");
    }

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
