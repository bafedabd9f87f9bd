//! Instrumentation, written once: [`Instruments::serve`] and
//! [`Instruments::call`] open the span of a served or a made call, and
//! [`Observation::finish`] records its metrics and ends the span. The layer
//! every role's gRPC server and every outgoing channel get
//! ([`InstrumentLayer`]) and the gateway's HTTP layer all use them,
//! so a request costs the same and is named the same way everywhere; a
//! tracing span puts `service`, `trace_id`, `span_id` and `request_id` on
//! every log line of a served call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use futures::FutureExt;
use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::Tracer;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::context::AppContext;
use crate::methods::KnownMethods;
use crate::metrics::Metrics;
use crate::trace::{RequestId, extract, inject, unexported_span};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The gRPC status name of a response: the `grpc-status` header of a
/// trailers-only answer (how tonic returns a handler's error), else OK.
fn grpc_code<B>(response: &http::Response<B>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from)
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The span's rpc attributes, from its (bounded) label.
fn rpc_attributes(path: &str) -> Vec<KeyValue> {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    vec![
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", service.to_owned()),
        KeyValue::new("rpc.method", method.to_owned()),
    ]
}

/// One role's instruments: its name, tracer and metrics.
#[derive(Clone)]
pub struct Instruments {
    role: &'static str,
    methods: KnownMethods,
    /// None when spans go nowhere: a call's span is then only its ids.
    tracer: Option<Tracer>,
    metrics: Arc<Metrics>,
}

impl Instruments {
    pub fn new(role: &'static str, context: &AppContext) -> Self {
        Self {
            role,
            methods: context.methods().clone(),
            tracer: context.tracers().exports().then(|| context.tracer(role)),
            metrics: context.metrics().clone(),
        }
    }

    pub fn role(&self) -> &'static str {
        self.role
    }

    /// Starts observing a request this role serves, in the caller's trace;
    /// `attributes` are the span's, asked for only when spans are exported.
    pub fn serve(
        &self,
        label: &str,
        parent: &Context,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Observation {
        self.start(Side::Served, label, parent, attributes)
    }

    /// Starts observing a call this role makes to a peer.
    pub fn call(
        &self,
        label: &str,
        parent: &Context,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Observation {
        self.start(Side::Called, label, parent, attributes)
    }

    fn start(
        &self,
        side: Side,
        label: &str,
        parent: &Context,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Observation {
        let cx = match &self.tracer {
            Some(tracer) => {
                let kind = match side {
                    Side::Served => SpanKind::Server,
                    Side::Called => SpanKind::Client,
                };
                let span = tracer
                    .span_builder(label.to_owned())
                    .with_kind(kind)
                    .with_attributes(attributes())
                    .start_with_context(tracer, parent);
                parent.with_span(span)
            }
            None => parent.with_remote_span_context(unexported_span(parent)),
        };
        Observation {
            side,
            role: self.role,
            metrics: self.metrics.clone(),
            label: label.to_owned(),
            cx,
            started: Instant::now(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Served,
    Called,
}

/// A call under observation, until [`Observation::finish`].
pub struct Observation {
    side: Side,
    role: &'static str,
    metrics: Arc<Metrics>,
    label: String,
    cx: Context,
    started: Instant,
}

impl Observation {
    /// The context the call runs in: its span, under the caller's.
    pub fn context(&self) -> &Context {
        &self.cx
    }

    /// Adds a value (e.g. the request id) to the call's context.
    pub fn with_value<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.cx = self.cx.with_value(value);
        self
    }

    /// The log span of a served call (see [`request_span`]).
    pub fn log_span(&self, request_id: &str) -> tracing::Span {
        request_span(self.role, &self.label, &self.cx, request_id)
    }

    /// Counts the call under `code` (a gRPC code name or an HTTP status),
    /// records its latency, and ends its span; `failed` marks the span an
    /// error; `status` is the span's status-code attribute.
    pub fn finish(self, code: &str, failed: bool, status: KeyValue) {
        let (count, latency) = match self.side {
            Side::Served => (
                &self.metrics.requests_total,
                &self.metrics.request_duration_seconds,
            ),
            Side::Called => (
                &self.metrics.client_requests_total,
                &self.metrics.client_request_duration_seconds,
            ),
        };
        count
            .with_label_values(&[self.role, &self.label, code])
            .inc();
        latency
            .with_label_values(&[self.role, &self.label])
            .observe(self.started.elapsed().as_secs_f64());
        // An unexported span (only ids) records nothing: skip building
        // what it would drop.
        let span = self.cx.span();
        if span.is_recording() {
            span.set_attribute(status);
            if failed {
                span.set_status(Status::error(code.to_owned()));
            }
        }
        span.end();
    }

    /// [`Observation::finish`] for a gRPC call that ended with `code`.
    pub fn finish_grpc(self, code: tonic::Code) {
        let attribute = KeyValue::new("rpc.grpc.status_code", code as i64);
        self.finish(code_name(code), code != tonic::Code::Ok, attribute);
    }
}

/// Instruments a role's gRPC server ([`InstrumentLayer::server`]) or its
/// channels to peers ([`InstrumentLayer::client`]).
#[derive(Clone)]
pub struct InstrumentLayer {
    instruments: Instruments,
    side: Side,
}

impl InstrumentLayer {
    pub fn server(role: &'static str, context: &AppContext) -> Self {
        Self {
            instruments: Instruments::new(role, context),
            side: Side::Served,
        }
    }

    pub fn client(role: &'static str, context: &AppContext) -> Self {
        Self {
            instruments: Instruments::new(role, context),
            side: Side::Called,
        }
    }
}

impl<S> Layer<S> for InstrumentLayer {
    type Service = Instrumented<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Instrumented {
            inner,
            layer: self.clone(),
        }
    }
}

/// A gRPC service or channel with its calls observed.
#[derive(Clone)]
pub struct Instrumented<S> {
    inner: S,
    layer: InstrumentLayer,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Instrumented<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instrumented")
            .field("role", &self.layer.instruments.role)
            .field("side", &self.layer.side)
            .field("inner", &self.inner)
            .finish()
    }
}

impl<S, B, R> Service<http::Request<B>> for Instrumented<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is ready only after its own poll_ready; keep the ready one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let instruments = &self.layer.instruments;
        let path = request.uri().path();
        let label = instruments.methods.label(path);
        let (observation, call, failed) = match self.layer.side {
            // A served call joins the caller's trace, and its log lines
            // carry the request id.
            Side::Served => {
                let parent = extract(request.headers());
                let request_id = parent.get::<RequestId>().map_or_else(
                    || format!("om-{}", uuid::Uuid::now_v7().simple()),
                    |id| id.0.clone(),
                );
                let observation = instruments
                    .serve(label, &parent, || rpc_attributes(label))
                    .with_value(RequestId(request_id.clone()));
                let log_span = observation.log_span(&request_id);
                let call = inner
                    .call(request)
                    .with_context(observation.context().clone())
                    .instrument(log_span);
                (
                    observation,
                    Box::pin(call) as BoxFuture<_>,
                    tonic::Code::Unknown,
                )
            }
            // A call to a peer carries the trace on; a transport error
            // means the peer could not be reached.
            Side::Called => {
                let observation =
                    instruments.call(label, &Context::current(), || rpc_attributes(label));
                inject(observation.context(), request.headers_mut());
                (
                    observation,
                    Box::pin(inner.call(request)) as BoxFuture<_>,
                    tonic::Code::Unavailable,
                )
            }
        };
        Box::pin(call.map(move |result| {
            let code = match &result {
                Ok(response) => grpc_code(response),
                Err(_) => failed,
            };
            observation.finish_grpc(code);
            result
        }))
    }
}

/// The log span of one served request: every log line inside it carries
/// the service, method, trace and span ids of `cx`, and the request id. The
/// gRPC servers and the gateway's HTTP layer both open it here.
pub fn request_span(service: &str, method: &str, cx: &Context, request_id: &str) -> tracing::Span {
    let span_context = cx.span().span_context().clone();
    let (mut trace_id, mut span_id) = ([0; 32], [0; 16]);
    // As `&str`, not `%` (Display): a string is recorded as it is, while
    // Display goes through `fmt` into the span's JSON (callgrind: a
    // quarter of the span's formatting).
    tracing::info_span!(
        "request",
        service = service,
        method = method,
        trace_id = lower_hex(&span_context.trace_id().to_bytes(), &mut trace_id),
        span_id = lower_hex(&span_context.span_id().to_bytes(), &mut span_id),
        request_id = request_id,
    )
}

/// `bytes` as lowercase hex in `out` (twice their length): what the ids'
/// `Display` writes, without `fmt`'s padded integer formatting, which was
/// two thirds of a request span's cost (callgrind).
fn lower_hex<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    match hex::encode_to_slice(bytes, out) {
        Ok(()) => std::str::from_utf8(out).unwrap_or_default(),
        Err(_) => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_from_trailers_only_answers() {
        let ok = http::Response::new(());
        assert_eq!(grpc_code(&ok), tonic::Code::Ok);
        let mut failed = http::Response::new(());
        failed
            .headers_mut()
            .insert("grpc-status", "5".parse().unwrap());
        assert_eq!(grpc_code(&failed), tonic::Code::NotFound);
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
    }

    #[test]
    fn ids_are_written_as_their_display_writes_them() {
        use opentelemetry::trace::{SpanId, TraceId};
        for seed in [
            0_u128,
            1,
            0xabc,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ] {
            let trace = TraceId::from(seed);
            let span = SpanId::from(u64::try_from(seed >> 64).unwrap_or(u64::MAX));
            let (mut trace_hex, mut span_hex) = ([0; 32], [0; 16]);
            assert_eq!(
                lower_hex(&trace.to_bytes(), &mut trace_hex),
                trace.to_string()
            );
            assert_eq!(lower_hex(&span.to_bytes(), &mut span_hex), span.to_string());
        }
    }
}
