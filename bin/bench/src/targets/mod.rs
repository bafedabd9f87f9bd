//! The workloads and the three ways of sending them: REST JSON (the
//! gateway or Envoy's transcoder), direct gRPC, and the bare echo RPC.

mod grpc;
mod orders;
mod rest;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use anyhow::Context;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::inventory::v1::{AdjustStockRequest, GetProductRequest};
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::transport::{Channel, Endpoint};

use self::grpc::{EchoDriver, GrpcDriver};
use self::orders::{PRODUCTS, mix};
use self::rest::RestDriver;
use crate::echo::proto::echo_service_client::EchoServiceClient;
use crate::load::Driver;

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

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
            Protocol::Echo => "echo",
        }
    }
}

/// Stock kept available before a run that creates orders, so no order
/// fails for want of it (the seeded catalog has a few hundred units).
const STOCK_FLOOR: i32 = 5_000_000;
const STOCK_TARGET: i32 = 20_000_000;

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
    /// `Bearer TOKEN` for the order API (None: send none).
    pub authorization: Option<String>,
}

impl TargetSpec {
    fn inventory_url(&self) -> &str {
        self.inventory_url.as_deref().unwrap_or(&self.url)
    }
}

/// Connects to `target`, prepares what `workload` needs (stock, orders to
/// read), and returns the driver.
pub async fn prepare(target: &TargetSpec, workload: Workload) -> anyhow::Result<Arc<dyn Driver>> {
    if target.protocol == Protocol::Echo {
        anyhow::ensure!(
            workload == Workload::Echo,
            "the echo target serves only the echo workload"
        );
        let channels = channels(&target.url, target.connections).await?;
        return Ok(Arc::new(EchoDriver {
            clients: channels.into_iter().map(EchoServiceClient::new).collect(),
            next: AtomicUsize::new(0),
        }));
    }
    anyhow::ensure!(
        workload != Workload::Echo,
        "the echo workload needs --target echo"
    );
    let needs_orders = matches!(workload, Workload::GetOrder | Workload::Mixed);
    let creates = matches!(workload, Workload::CreateOrder | Workload::Mixed);
    let inventory = if creates || needs_orders || target.protocol == Protocol::Grpc {
        inventory_clients(target.inventory_url(), target.connections).await?
    } else {
        Vec::new()
    };
    if (creates || needs_orders)
        && let Some(first) = inventory.first()
    {
        top_up_stock(first.clone()).await?;
    }
    let mut driver = order_driver(target, workload, target.connections, inventory).await?;
    if needs_orders {
        let ids = match &target.order_ids {
            Some(ids) => ids.clone(),
            None => driver.place(target.seed_orders).await?,
        };
        driver.set_order_ids(ids);
    }
    Ok(match driver {
        OrderDriver::Grpc(driver) => Arc::new(driver),
        OrderDriver::Rest(driver) => Arc::new(*driver),
    })
}

/// Places `count` orders through `target` (stock topped up first) and
/// returns their ids, for get-order runs on any path to read.
pub async fn seed_orders(target: &TargetSpec, count: usize) -> anyhow::Result<Arc<Vec<String>>> {
    for inventory in inventory_clients(target.inventory_url(), 1).await? {
        top_up_stock(inventory).await?;
    }
    order_driver(target, Workload::CreateOrder, 1, Vec::new())
        .await?
        .place(count)
        .await
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

async fn inventory_clients(
    url: &str,
    count: usize,
) -> anyhow::Result<Vec<InventoryServiceClient<Channel>>> {
    let channels = channels(url, count).await?;
    Ok(channels
        .into_iter()
        .map(InventoryServiceClient::new)
        .collect())
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

/// The driver of an order workload, over gRPC or REST.
async fn order_driver(
    target: &TargetSpec,
    workload: Workload,
    connections: usize,
    inventory: Vec<InventoryServiceClient<Channel>>,
) -> anyhow::Result<OrderDriver> {
    Ok(match target.protocol {
        Protocol::Grpc => OrderDriver::Grpc(GrpcDriver {
            orders: channels(&target.url, connections)
                .await?
                .into_iter()
                .map(OrderServiceClient::new)
                .collect(),
            inventory,
            next: AtomicUsize::new(0),
            order_ids: Arc::new(Vec::new()),
            workload,
            run_id: target.run_id.clone(),
            authorization: target
                .authorization
                .as_deref()
                .map(str::parse)
                .transpose()
                .context("the token is not ASCII")?,
        }),
        _ => OrderDriver::Rest(Box::new(RestDriver::new(
            &target.url,
            workload,
            &target.run_id,
            target.authorization.as_deref(),
        )?)),
    })
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

    /// Places `count` (at least one) orders, numbered from the top of the
    /// sequence so that no run's request shares their idempotency keys.
    async fn place(&self, count: usize) -> anyhow::Result<Arc<Vec<String>>> {
        let mut ids = Vec::with_capacity(count.max(1));
        for i in 0..count.max(1) {
            ids.push(self.create(u64::MAX - i as u64).await?);
        }
        Ok(Arc::new(ids))
    }

    fn set_order_ids(&mut self, ids: Arc<Vec<String>>) {
        match self {
            OrderDriver::Grpc(driver) => driver.order_ids = ids,
            OrderDriver::Rest(driver) => driver.order_ids = ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
