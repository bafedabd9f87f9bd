//! The REST driver: JSON over HTTP/1.1 with keep-alive (one connection per
//! outstanding request), to the ordermesh gateway or Envoy's transcoder.

use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ordermesh_proto::order::v1::OrderStatus;

use super::Workload;
use super::orders::{check_created, order_spec, pick_order};
use crate::load::Driver;
use crate::stats::Outcome;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub struct RestDriver {
    client: HttpClient,
    base: String,
    pub order_ids: Arc<Vec<String>>,
    workload: Workload,
    run_id: String,
    authorization: Option<http::HeaderValue>,
}

impl RestDriver {
    pub fn new(
        base: &str,
        workload: Workload,
        run_id: &str,
        authorization: Option<&str>,
    ) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        anyhow::ensure!(
            base.starts_with("http://"),
            "the REST target must be an http:// URL, got {base:?}"
        );
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            client,
            base,
            order_ids: Arc::new(Vec::new()),
            workload,
            run_id: run_id.to_owned(),
            authorization: authorization
                .map(http::HeaderValue::from_str)
                .transpose()
                .context("the token is not a header value")?,
        })
    }

    pub fn create_request(&self, seq: u64) -> http::Request<Full<Bytes>> {
        let body = order_spec(seq).json();
        let mut request = http::Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uri("/v1/orders");
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        if let Ok(key) = http::HeaderValue::from_str(&format!("bench-{}-{seq}", self.run_id)) {
            headers.insert("idempotency-key", key);
        }
        self.sign(headers);
        request
    }

    fn sign(&self, headers: &mut http::HeaderMap) {
        if let Some(authorization) = &self.authorization {
            headers.insert(http::header::AUTHORIZATION, authorization.clone());
        }
    }

    fn uri(&self, path: &str) -> http::Uri {
        format!("{}{path}", self.base)
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("http://invalid/"))
    }

    fn get(&self, path: &str) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = self.uri(path);
        self.sign(request.headers_mut());
        request
    }

    /// Sends `request` and reads the whole answer.
    pub async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        send(self.client.clone(), request)
            .await
            .map_err(|e| anyhow::anyhow!(e))
    }
}

async fn send(
    client: HttpClient,
    request: http::Request<Full<Bytes>>,
) -> Result<(http::StatusCode, Bytes), String> {
    let response = client.request(request).await.map_err(|e| {
        if e.is_connect() {
            "connect error".to_owned()
        } else {
            "http transport error".to_owned()
        }
    })?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|_| "http body error".to_owned())?
        .to_bytes();
    Ok((status, body))
}

fn http_error(status: http::StatusCode) -> String {
    format!("http {}", status.as_u16())
}

/// A request whose only check is a 2xx answer.
fn expect_success(
    client: HttpClient,
    request: http::Request<Full<Bytes>>,
) -> BoxFuture<'static, Outcome> {
    Box::pin(async move {
        let (status, _) = send(client, request).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(http_error(status))
        }
    })
}

/// The fields of a placed order the workload judges it by, as the gateway
/// prints them (`"status":"ORDER_STATUS_CONFIRMED"`); the rest is skipped.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    #[serde(default)]
    status: String,
    #[serde(default)]
    failure_reason: String,
}

fn rest_created(body: &[u8]) -> Outcome {
    let created: Created = serde_json::from_slice(body).map_err(|_| "order not JSON".to_owned())?;
    let status = OrderStatus::from_str_name(&created.status).unwrap_or(OrderStatus::Unspecified);
    check_created(status, &created.failure_reason)
}

impl Driver for RestDriver {
    fn call(&self, seq: u64) -> BoxFuture<'static, Outcome> {
        let client = self.client.clone();
        match self.workload.pick(seq) {
            Workload::CreateOrder => {
                let request = self.create_request(seq);
                Box::pin(async move {
                    let (status, body) = send(client, request).await?;
                    if !status.is_success() {
                        return Err(http_error(status));
                    }
                    rest_created(&body)
                })
            }
            Workload::GetOrder => expect_success(
                client,
                self.get(&format!("/v1/orders/{}", pick_order(&self.order_ids, seq))),
            ),
            Workload::ListProducts | Workload::Mixed | Workload::Echo => {
                expect_success(client, self.get("/v1/products"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_orders_are_judged_by_status() {
        assert!(rest_created(br#"{"orderId":"x","status":"ORDER_STATUS_CONFIRMED"}"#).is_ok());
        assert!(
            rest_created(br#"{"status":"ORDER_STATUS_FAILED","failureReason":"CARD_DECLINED"}"#)
                .is_ok()
        );
        assert_eq!(
            rest_created(br#"{"status":"ORDER_STATUS_FAILED","failureReason":"OUT_OF_STOCK"}"#),
            Err("order FAILED OUT_OF_STOCK".to_owned())
        );
        assert_eq!(
            rest_created(br#"{"status":"ORDER_STATUS_PENDING"}"#),
            Err("order ORDER_STATUS_PENDING".to_owned())
        );
        assert_eq!(rest_created(b"<html>"), Err("order not JSON".to_owned()));
    }
}
