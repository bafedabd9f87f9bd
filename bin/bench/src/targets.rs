//! The workloads and the three ways of sending them: REST JSON (the
//! gateway or Envoy's transcoder), direct gRPC, and the bare echo RPC.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::inventory::v1::{AdjustStockRequest, GetProductRequest, ListProductsRequest};
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::order::v1::{
    CreateOrderRequest, GetOrderRequest, Order, OrderItem, OrderStatus,
};
use tonic::transport::{Channel, Endpoint};

use crate::echo::proto::EchoMessage;
use crate::echo::proto::echo_service_client::EchoServiceClient;
use crate::load::Driver;
use crate::stats::Outcome;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// POST /v1/orders | CreateOrder: a mixed catalog, mostly good cards.
    CreateOrder,
    /// GET /v1/orders/{id} | GetOrder over orders placed before the run.
    GetOrder,
    /// GET /v1/products | ListProducts (the whole catalog).
    ListProducts,
    /// 60 % get-order, 25 % list-products, 15 % create-order.
    Mixed,
    /// The bare echo RPC (only with `--target echo`).
    Echo,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::CreateOrder => "create-order",
            Workload::GetOrder => "get-order",
            Workload::ListProducts => "list-products",
            Workload::Mixed => "mixed",
            Workload::Echo => "echo",
        }
    }

    /// What request `seq` of this workload is.
    fn pick(self, seq: u64) -> Workload {
        match self {
            Workload::Mixed => match mix(seq, 0x6d69) % 100 {
                0..60 => Workload::GetOrder,
                60..85 => Workload::ListProducts,
                _ => Workload::CreateOrder,
            },
            other => other,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// REST JSON over HTTP/1.1 (the ordermesh gateway or Envoy's transcoder).
    Rest,
    /// gRPC straight to the order and inventory services.
    Grpc,
    /// The bare echo server.
    Echo,
}

/// The catalog the inventory seeds (`lib/inventory/src/catalog.rs`).
const PRODUCTS: &[&str] = &[
    "sku-espresso",
    "sku-filter",
    "sku-grinder",
    "sku-kettle",
    "sku-mug",
    "sku-scale",
];

/// Stock kept available before a run that creates orders, so no order
/// fails for want of it (the seeded catalog has a few hundred units).
const STOCK_FLOOR: i32 = 5_000_000;
const STOCK_TARGET: i32 = 20_000_000;

/// A deterministic pseudo-random number for request `seq` (splitmix64).
fn mix(seq: u64, salt: u64) -> u64 {
    let mut z = seq
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(salt.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One generated order: who, what, and how they pay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderSpec {
    pub customer: String,
    pub items: Vec<(&'static str, i32)>,
    pub payment: &'static str,
}

/// Request `seq`'s order: one to three distinct products of the whole
/// catalog, one to three of each; 90 % good cards, the rest declined
/// (card_declined, insufficient_funds) or a processor error, so the saga's
/// compensation path runs too.
pub fn order_spec(seq: u64) -> OrderSpec {
    let lines = 1 + (mix(seq, 1) % 3) as usize;
    let first = (mix(seq, 2) % PRODUCTS.len() as u64) as usize;
    let items = (0..lines)
        .map(|i| {
            let product = PRODUCTS[(first + i) % PRODUCTS.len()];
            let quantity = 1 + (mix(seq, 3 + i as u64) % 3) as i32;
            (product, quantity)
        })
        .collect();
    let payment = match mix(seq, 7) % 100 {
        0..30 => "pm_card_visa",
        30..60 => "pm_card_mastercard",
        60..90 => "pm_card_amex",
        90..94 => "pm_card_chargeDeclined",
        94..97 => "pm_card_insufficientFunds",
        _ => "pm_card_processingError",
    };
    OrderSpec {
        customer: format!("bench-{}", mix(seq, 9) % 64),
        items,
        payment,
    }
}

impl OrderSpec {
    fn json(&self) -> String {
        let items: Vec<String> = self
            .items
            .iter()
            .map(|(product, quantity)| {
                format!(r#"{{"productId":"{product}","quantity":{quantity}}}"#)
            })
            .collect();
        format!(
            r#"{{"customerId":"{}","items":[{}],"paymentMethod":"{}"}}"#,
            self.customer,
            items.join(","),
            self.payment
        )
    }

    fn grpc(&self) -> CreateOrderRequest {
        CreateOrderRequest {
            customer_id: self.customer.clone(),
            items: self
                .items
                .iter()
                .map(|(product, quantity)| OrderItem {
                    product_id: (*product).to_owned(),
                    quantity: *quantity,
                    unit_price: None,
                })
                .collect(),
            payment_method: self.payment.to_owned(),
        }
    }
}

/// A placed order that did not end as the workload expects: still PENDING
/// (the saga did not finish within the call), or FAILED for a reason other
/// than the card tokens' declines (e.g. OUT_OF_STOCK).
fn check_created(status: OrderStatus, failure_reason: &str) -> Outcome {
    match status {
        OrderStatus::Confirmed => Ok(()),
        OrderStatus::Failed
            if matches!(
                failure_reason,
                "CARD_DECLINED" | "INSUFFICIENT_FUNDS" | "PAYMENT_PROCESSING_ERROR"
            ) =>
        {
            Ok(())
        }
        OrderStatus::Failed => Err(format!("order FAILED {failure_reason}")),
        other => Err(format!("order {}", other.as_str_name())),
    }
}

/// Where to send a workload.
#[derive(Clone, Debug)]
pub struct TargetSpec {
    pub protocol: Protocol,
    /// `http://HOST:PORT`: the REST base, the order service, or the echo server.
    pub url: String,
    /// The inventory's gRPC URL: ListProducts over gRPC, and the stock
    /// top-up before creating orders. Defaults to `url`.
    pub inventory_url: Option<String>,
    /// gRPC connections to open (requests are spread over them).
    pub connections: usize,
    /// Orders to place before a get-order or mixed run, to read back...
    pub seed_orders: usize,
    /// ...unless they are given.
    pub order_ids: Option<Arc<Vec<String>>>,
    /// Distinguishes idempotency keys of separate runs on one database.
    pub run_id: String,
}

/// Connects to `target`, prepares what `workload` needs (stock, orders to
/// read), and returns the driver.
pub async fn prepare(target: &TargetSpec, workload: Workload) -> anyhow::Result<Arc<dyn Driver>> {
    match target.protocol {
        Protocol::Echo => {
            anyhow::ensure!(
                workload == Workload::Echo,
                "the echo target serves only the echo workload"
            );
            let channels = channels(&target.url, target.connections).await?;
            Ok(Arc::new(EchoDriver {
                clients: channels.into_iter().map(EchoServiceClient::new).collect(),
                next: AtomicUsize::new(0),
            }))
        }
        Protocol::Grpc | Protocol::Rest => {
            anyhow::ensure!(
                workload != Workload::Echo,
                "the echo workload needs --target echo"
            );
            let inventory_url = target.inventory_url.as_deref().unwrap_or(&target.url);
            let needs_orders = matches!(workload, Workload::GetOrder | Workload::Mixed);
            let creates = matches!(workload, Workload::CreateOrder | Workload::Mixed);
            let inventory = if creates || needs_orders || target.protocol == Protocol::Grpc {
                let channels = channels(inventory_url, target.connections).await?;
                Some(
                    channels
                        .into_iter()
                        .map(InventoryServiceClient::new)
                        .collect::<Vec<_>>(),
                )
            } else {
                None
            };
            if (creates || needs_orders)
                && let Some(inventory) = inventory.as_ref().and_then(|i| i.first())
            {
                top_up_stock(inventory.clone()).await?;
            }
            let mut driver = match target.protocol {
                Protocol::Grpc => {
                    let channels = channels(&target.url, target.connections).await?;
                    OrderDriver::Grpc(GrpcDriver {
                        orders: channels.into_iter().map(OrderServiceClient::new).collect(),
                        inventory: inventory.unwrap_or_default(),
                        next: AtomicUsize::new(0),
                        order_ids: Arc::new(Vec::new()),
                        workload,
                        run_id: target.run_id.clone(),
                    })
                }
                _ => OrderDriver::Rest(Box::new(RestDriver::new(
                    &target.url,
                    workload,
                    &target.run_id,
                )?)),
            };
            if needs_orders {
                let ids = match &target.order_ids {
                    Some(ids) => ids.clone(),
                    None => {
                        let mut ids = Vec::with_capacity(target.seed_orders);
                        for i in 0..target.seed_orders.max(1) {
                            ids.push(driver.create(u64::MAX - i as u64).await?);
                        }
                        Arc::new(ids)
                    }
                };
                driver.set_order_ids(ids);
            }
            Ok(match driver {
                OrderDriver::Grpc(driver) => Arc::new(driver),
                OrderDriver::Rest(driver) => Arc::new(*driver),
            })
        }
    }
}

/// Places `count` orders through `target` (stock topped up first) and
/// returns their ids, for get-order runs on any path to read.
pub async fn seed_orders(target: &TargetSpec, count: usize) -> anyhow::Result<Arc<Vec<String>>> {
    let mut seeding = target.clone();
    seeding.order_ids = None;
    seeding.seed_orders = count;
    let inventory_url = target.inventory_url.as_deref().unwrap_or(&target.url);
    let inventory = channels(inventory_url, 1).await?;
    for channel in inventory {
        top_up_stock(InventoryServiceClient::new(channel)).await?;
    }
    let driver = match target.protocol {
        Protocol::Grpc => OrderDriver::Grpc(GrpcDriver {
            orders: channels(&target.url, 1)
                .await?
                .into_iter()
                .map(OrderServiceClient::new)
                .collect(),
            inventory: Vec::new(),
            next: AtomicUsize::new(0),
            order_ids: Arc::new(Vec::new()),
            workload: Workload::CreateOrder,
            run_id: target.run_id.clone(),
        }),
        _ => OrderDriver::Rest(Box::new(RestDriver::new(
            &target.url,
            Workload::CreateOrder,
            &target.run_id,
        )?)),
    };
    let mut ids = Vec::with_capacity(count);
    for i in 0..count.max(1) {
        ids.push(driver.create(u64::MAX - i as u64).await?);
    }
    Ok(Arc::new(ids))
}

/// `count` separate HTTP/2 connections to `url`.
pub async fn channels(url: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count.max(1));
    for _ in 0..count.max(1) {
        let channel = Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("invalid URL {url:?}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// Raises every product's available stock to well above what a run sells.
async fn top_up_stock(mut inventory: InventoryServiceClient<Channel>) -> anyhow::Result<()> {
    for product in PRODUCTS {
        let available = inventory
            .get_product(GetProductRequest {
                product_id: (*product).to_owned(),
            })
            .await
            .with_context(|| format!("reading the stock of {product}"))?
            .into_inner()
            .available;
        if available < STOCK_FLOOR {
            inventory
                .adjust_stock(AdjustStockRequest {
                    product_id: (*product).to_owned(),
                    delta: STOCK_TARGET - available,
                })
                .await
                .with_context(|| format!("topping up the stock of {product}"))?;
        }
    }
    Ok(())
}

fn grpc_error(status: &tonic::Status) -> String {
    format!("grpc {:?}", status.code())
}

enum OrderDriver {
    Grpc(GrpcDriver),
    Rest(Box<RestDriver>),
}

impl OrderDriver {
    /// Places order `seq` and returns its id (setup, not measured).
    async fn create(&self, seq: u64) -> anyhow::Result<String> {
        match self {
            OrderDriver::Grpc(driver) => {
                let order = driver.orders[0]
                    .clone()
                    .create_order(driver.create_request(seq))
                    .await
                    .context("placing an order to read back")?
                    .into_inner();
                Ok(order.order_id)
            }
            OrderDriver::Rest(driver) => {
                let (status, body) = driver.send(driver.create_request(seq)).await?;
                anyhow::ensure!(
                    status.is_success(),
                    "placing an order to read back: HTTP {status}: {}",
                    String::from_utf8_lossy(&body)
                );
                let order: serde_json::Value =
                    serde_json::from_slice(&body).context("parsing the placed order")?;
                order["orderId"]
                    .as_str()
                    .map(str::to_owned)
                    .context("the placed order has no orderId")
            }
        }
    }

    fn set_order_ids(&mut self, ids: Arc<Vec<String>>) {
        match self {
            OrderDriver::Grpc(driver) => driver.order_ids = ids,
            OrderDriver::Rest(driver) => driver.order_ids = ids,
        }
    }
}

fn pick_order(order_ids: &[String], seq: u64) -> String {
    if order_ids.is_empty() {
        return "ord_missing".to_owned();
    }
    order_ids[(mix(seq, 11) % order_ids.len() as u64) as usize].clone()
}

struct GrpcDriver {
    orders: Vec<OrderServiceClient<Channel>>,
    inventory: Vec<InventoryServiceClient<Channel>>,
    next: AtomicUsize,
    order_ids: Arc<Vec<String>>,
    workload: Workload,
    run_id: String,
}

impl GrpcDriver {
    fn create_request(&self, seq: u64) -> tonic::Request<CreateOrderRequest> {
        let mut request = tonic::Request::new(order_spec(seq).grpc());
        if let Ok(key) = format!("bench-{}-{seq}", self.run_id).parse() {
            request.metadata_mut().insert("idempotency-key", key);
        }
        request
    }
}

impl Driver for GrpcDriver {
    fn call(&self, seq: u64) -> BoxFuture<'static, Outcome> {
        let connection = self.next.fetch_add(1, Ordering::Relaxed);
        match self.workload.pick(seq) {
            Workload::CreateOrder => {
                let mut client = self.orders[connection % self.orders.len()].clone();
                let request = self.create_request(seq);
                Box::pin(async move {
                    let order: Order = client
                        .create_order(request)
                        .await
                        .map_err(|s| grpc_error(&s))?
                        .into_inner();
                    check_created(order.status(), &order.failure_reason)
                })
            }
            Workload::GetOrder => {
                let mut client = self.orders[connection % self.orders.len()].clone();
                let order_id = pick_order(&self.order_ids, seq);
                Box::pin(async move {
                    client
                        .get_order(GetOrderRequest { order_id })
                        .await
                        .map(drop)
                        .map_err(|s| grpc_error(&s))
                })
            }
            Workload::ListProducts | Workload::Mixed | Workload::Echo => {
                let Some(client) = self.inventory.get(connection % self.inventory.len().max(1))
                else {
                    return Box::pin(async { Err("no inventory connection".to_owned()) });
                };
                let mut client = client.clone();
                Box::pin(async move {
                    client
                        .list_products(ListProductsRequest::default())
                        .await
                        .map(drop)
                        .map_err(|s| grpc_error(&s))
                })
            }
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct RestDriver {
    client: HttpClient,
    base: String,
    order_ids: Arc<Vec<String>>,
    workload: Workload,
    run_id: String,
}

impl RestDriver {
    fn new(base: &str, workload: Workload, run_id: &str) -> anyhow::Result<Self> {
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
        })
    }

    fn create_request(&self, seq: u64) -> http::Request<Full<Bytes>> {
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
        request
    }

    fn uri(&self, path: &str) -> http::Uri {
        format!("{}{path}", self.base)
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("http://invalid/"))
    }

    fn get(&self, path: &str) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = self.uri(path);
        request
    }

    /// Sends `request` and reads the whole answer.
    async fn send(
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

/// The order's status and failure reason as the gateway prints them, read
/// without a full JSON parse (`"status":"ORDER_STATUS_CONFIRMED"`).
fn rest_created(body: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(body);
    let field = |name: &str| {
        let key = format!("\"{name}\":\"");
        text.find(&key).and_then(|at| {
            let rest = &text[at + key.len()..];
            rest.find('"').map(|end| rest[..end].to_owned())
        })
    };
    let status = field("status")
        .and_then(|s| OrderStatus::from_str_name(&s))
        .unwrap_or(OrderStatus::Unspecified);
    check_created(status, &field("failureReason").unwrap_or_default())
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

struct EchoDriver {
    clients: Vec<EchoServiceClient<Channel>>,
    next: AtomicUsize,
}

/// About the size of a GetOrder request (an order id).
const ECHO_PAYLOAD: &[u8] = b"ord_0196a3b1c2d37e4f8a9b0c1d2e3f4a5b";

impl Driver for EchoDriver {
    fn call(&self, _seq: u64) -> BoxFuture<'static, Outcome> {
        let connection = self.next.fetch_add(1, Ordering::Relaxed);
        let mut client = self.clients[connection % self.clients.len()].clone();
        Box::pin(async move {
            client
                .echo(EchoMessage {
                    payload: ECHO_PAYLOAD.to_vec(),
                })
                .await
                .map(drop)
                .map_err(|s| grpc_error(&s))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_deterministic_and_mixed() {
        assert_eq!(order_spec(42), order_spec(42));
        let specs: Vec<OrderSpec> = (0..1000).map(order_spec).collect();
        let good = specs
            .iter()
            .filter(|s| s.payment.starts_with("pm_card_") && !s.payment.contains("Declined"))
            .filter(|s| !s.payment.contains("insufficient") && !s.payment.contains("Error"))
            .count();
        assert!((850..=950).contains(&good), "{good} good cards in 1000");
        for product in PRODUCTS {
            assert!(
                specs
                    .iter()
                    .any(|s| s.items.iter().any(|(p, _)| p == product)),
                "{product} never ordered"
            );
        }
        for spec in &specs {
            assert!((1..=3).contains(&spec.items.len()));
            let mut ids: Vec<_> = spec.items.iter().map(|(p, _)| *p).collect();
            ids.dedup();
            assert_eq!(ids.len(), spec.items.len(), "duplicate lines: {spec:?}");
        }
    }

    #[test]
    fn the_mix_is_about_sixty_twenty_five_fifteen() {
        let mut counts = [0u32; 3];
        for seq in 0..10_000 {
            match Workload::Mixed.pick(seq) {
                Workload::GetOrder => counts[0] += 1,
                Workload::ListProducts => counts[1] += 1,
                Workload::CreateOrder => counts[2] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!((5800..6200).contains(&counts[0]), "{counts:?}");
        assert!((2300..2700).contains(&counts[1]), "{counts:?}");
        assert!((1300..1700).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn order_json_is_what_the_gateway_takes() {
        let spec = OrderSpec {
            customer: "bench-1".into(),
            items: vec![("sku-mug", 2)],
            payment: "pm_card_visa",
        };
        let value: serde_json::Value = serde_json::from_str(&spec.json()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"customerId": "bench-1", "items": [{"productId": "sku-mug", "quantity": 2}], "paymentMethod": "pm_card_visa"})
        );
    }

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
    }
}
