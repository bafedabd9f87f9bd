//! OTLP receivers of the test's own, one per transport, and the check that
//! spans leave by whichever the settings (`OTEL_EXPORTER_OTLP_PROTOCOL`)
//! name: gRPC, as most collectors and Jaeger expect on 4317, or
//! HTTP/protobuf on 4318.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use ordermesh_runtime::trace::OtlpProtocol;
use ordermesh_testkit::TestDatabase;
use prost::Message;

use crate::harness::{Endpoints, TestApp, order_request};

/// Spans an OTLP endpoint received: (service.name, span).
pub type Received = Arc<Mutex<Vec<(String, Span)>>>;

fn record(sink: &Received, request: ExportTraceServiceRequest) {
    let mut sink = sink.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(name) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                sink.push((service.clone(), span));
            }
        }
    }
}

/// An OTLP/HTTP endpoint (POST /v1/traces, protobuf bodies).
pub async fn http_receiver() -> (std::net::SocketAddr, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                if let Ok(request) = ExportTraceServiceRequest::decode(body) {
                    record(&sink, request);
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

struct Collector(Received);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        record(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC endpoint (opentelemetry.proto.collector.trace.v1.TraceService).
pub async fn grpc_receiver() -> (std::net::SocketAddr, Received) {
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = TraceServiceServer::new(Collector(received.clone()));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_leave_by_the_protocol_the_settings_name() {
    for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
        let (collector, received) = match protocol {
            OtlpProtocol::Grpc => grpc_receiver().await,
            OtlpProtocol::HttpProtobuf => http_receiver().await,
        };
        let mut app = TestApp::spawn(Arc::new(TestDatabase::sqlite()), |settings| {
            settings.trace.endpoint = Some(format!("http://{collector}"));
            settings.trace.protocol = protocol;
        })
        .await;
        let order = app
            .order()
            .await
            .create_order(order_request(
                "cust-otlp",
                &[("sku-mug", 1)],
                "pm_card_visa",
            ))
            .await
            .expect("create")
            .into_inner();
        assert_eq!(order.status, 2, "CONFIRMED: {order:?}");
        // Stopping the App flushes its tracers: every span is out.
        app.stop().await;
        let spans = received.lock().unwrap().clone();
        let services: HashSet<&str> = spans.iter().map(|(service, _)| service.as_str()).collect();
        eprintln!("{protocol:?}: {} spans from {services:?}", spans.len());
        for role in ["order", "inventory", "payment"] {
            assert!(
                services.contains(role),
                "{protocol:?}: no span from {role}: {services:?}"
            );
        }
        assert!(
            spans.iter().any(|(service, span)| service == "order"
                && span.name == "/ordermesh.order.v1.OrderService/CreateOrder"),
            "{protocol:?}"
        );
    }
    // Nothing exported without an endpoint: the default.
    let settings = ordermesh_runtime::trace::TraceSettings::default();
    assert_eq!(settings.export_target(), None);
}
