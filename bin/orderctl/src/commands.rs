//! What each command does: one gRPC call (or a stream), then rendering.

use anyhow::Context;
use futures::StreamExt;
use ordermesh_proto::inventory::v1::inventory_service_client::InventoryServiceClient;
use ordermesh_proto::inventory::v1::{
    AdjustStockRequest, GetProductRequest, ListProductsRequest, Product,
};
use ordermesh_proto::order::v1::order_service_client::OrderServiceClient;
use ordermesh_proto::order::v1::{
    CancelOrderRequest, CreateOrderRequest, GetOrderRequest, ListOrdersRequest, Order, OrderItem,
    WatchOrderRequest,
};
use ordermesh_runtime::client::{GrpcClientSettings, channel};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::cli::{
    Cli, Command, CreateArgs, EventsCommand, OrderCommand, ProductCommand, TailSource,
};
use crate::{login, render};

struct Session {
    cli_json: bool,
    timeout: std::time::Duration,
    order_url: String,
    inventory_url: String,
    token: Option<String>,
    config_dir: Option<std::path::PathBuf>,
}

impl Session {
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// A request to the order service: with a deadline and the caller's token.
    fn order_request<T>(&self, message: T) -> anyhow::Result<Request<T>> {
        let mut request = self.request(message);
        self.sign(&mut request)?;
        Ok(request)
    }

    fn sign<T>(&self, request: &mut Request<T>) -> anyhow::Result<()> {
        let dir = login::config_dir(self.config_dir.as_deref())?;
        let token = login::token(self.token.as_deref(), &dir)?;
        let value = format!("Bearer {token}")
            .parse()
            .context("the token is not printable ASCII")?;
        request.metadata_mut().insert("authorization", value);
        Ok(())
    }

    fn orders(&self) -> anyhow::Result<OrderServiceClient<Channel>> {
        Ok(OrderServiceClient::new(channel(
            &self.order_url,
            &GrpcClientSettings::default(),
        )?))
    }

    fn inventory(&self) -> anyhow::Result<InventoryServiceClient<Channel>> {
        Ok(InventoryServiceClient::new(channel(
            &self.inventory_url,
            &GrpcClientSettings::default(),
        )?))
    }

    fn print_order(&self, order: &Order) -> std::io::Result<()> {
        if self.cli_json {
            say!("{}", render::order_json(order));
        } else {
            say!("{}", render::order_text(order));
        }
        Ok(())
    }

    fn print_product(&self, product: &Product) -> std::io::Result<()> {
        if self.cli_json {
            say!("{}", render::product_json(product));
        } else {
            say!("{}", render::products_text(std::slice::from_ref(product)));
        }
        Ok(())
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let context = Session {
        cli_json: cli.json,
        timeout: cli.timeout,
        order_url: cli.order_url,
        inventory_url: cli.inventory_url,
        token: cli.token,
        config_dir: cli.config_dir,
    };
    match cli.command {
        Command::Login { customer, admin } => {
            let dir = login::config_dir(context.config_dir.as_deref())?;
            let (token, expires_in) = match (&context.token, customer) {
                (Some(token), _) => (token.clone(), 0),
                (None, Some(customer)) => {
                    login::dev_token(&cli.gateway_url, &customer, admin).await?
                }
                (None, None) => {
                    anyhow::bail!("name the customer (`orderctl login alice`), or give --token")
                }
            };
            let path = login::save(&dir, &token)?;
            if expires_in > 0 {
                say!(
                    "signed in; the token is in {} (valid {expires_in} s)",
                    path.display()
                );
            } else {
                say!("signed in; the token is in {}", path.display());
            }
            Ok(())
        }
        Command::Token => {
            let dir = login::config_dir(context.config_dir.as_deref())?;
            say!("{}", login::token(context.token.as_deref(), &dir)?);
            Ok(())
        }
        Command::Logout => login::forget(&login::config_dir(context.config_dir.as_deref())?),
        Command::Products => products(&context).await,
        Command::Product(ProductCommand::Get { product_id }) => {
            let product = context
                .inventory()?
                .get_product(context.request(GetProductRequest { product_id }))
                .await
                .map_err(|s| explain(s, "inventory", &context.inventory_url))?
                .into_inner();
            context.print_product(&product)?;
            Ok(())
        }
        Command::Product(ProductCommand::Adjust { product_id, delta }) => {
            let product = context
                .inventory()?
                .adjust_stock(context.request(AdjustStockRequest { product_id, delta }))
                .await
                .map_err(|s| explain(s, "inventory", &context.inventory_url))?
                .into_inner();
            context.print_product(&product)?;
            Ok(())
        }
        Command::Order(command) => order(&context, command).await,
        Command::Events(EventsCommand::Tail(args)) => match args.source {
            TailSource::Nats => crate::events::tail_nats(&args, context.cli_json).await,
            TailSource::Gateway => {
                let dir = login::config_dir(context.config_dir.as_deref())?;
                let token = login::token(context.token.as_deref(), &dir)?;
                let gateway = crate::events::Gateway {
                    url: &cli.gateway_url,
                    token: &token,
                    connect_timeout: context.timeout,
                };
                crate::events::tail_gateway(&args, &gateway, context.cli_json).await
            }
        },
        Command::Health { url, service } => {
            crate::health::check(&url, &service, context.timeout).await
        }
    }
}

async fn products(context: &Session) -> anyhow::Result<()> {
    let mut inventory = context.inventory()?;
    let mut products = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = inventory
            .list_products(context.request(ListProductsRequest {
                page_size: 500,
                page_token: page_token.clone(),
                product_ids: Vec::new(),
            }))
            .await
            .map_err(|s| explain(s, "inventory", &context.inventory_url))?
            .into_inner();
        products.extend(page.products);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if context.cli_json {
        for product in &products {
            say!("{}", render::product_json(product));
        }
    } else {
        say!("{}", render::products_text(&products));
    }
    Ok(())
}

async fn order(context: &Session, command: OrderCommand) -> anyhow::Result<()> {
    let mut orders = context.orders()?;
    let fail = |status| explain(status, "order", &context.order_url);
    match command {
        OrderCommand::Create(args) => {
            let order = orders
                .create_order(create_request(context, args)?)
                .await
                .map_err(fail)?;
            context.print_order(order.get_ref())?;
        }
        OrderCommand::Get { order_id } => {
            let order = orders
                .get_order(context.order_request(GetOrderRequest { order_id })?)
                .await
                .map_err(fail)?;
            context.print_order(order.get_ref())?;
        }
        OrderCommand::List {
            customer,
            page_size,
            all,
        } => {
            let mut page_token = String::new();
            loop {
                let page = orders
                    .list_orders(context.order_request(ListOrdersRequest {
                        customer_id: customer.clone(),
                        page_size,
                        page_token: page_token.clone(),
                    })?)
                    .await
                    .map_err(fail)?
                    .into_inner();
                for order in &page.orders {
                    context.print_order(order)?;
                }
                if !all || page.next_page_token.is_empty() {
                    if !all && !page.next_page_token.is_empty() && !context.cli_json {
                        say!("(more: --all lists every page)");
                    }
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        OrderCommand::Cancel { order_id } => {
            let order = orders
                .cancel_order(context.order_request(CancelOrderRequest { order_id })?)
                .await
                .map_err(fail)?;
            context.print_order(order.get_ref())?;
        }
        OrderCommand::Watch { order_id } => {
            // A watch lasts as long as the order takes: no deadline.
            let mut watch = Request::new(WatchOrderRequest { order_id });
            context.sign(&mut watch)?;
            let mut updates = orders.watch_order(watch).await.map_err(fail)?.into_inner();
            while let Some(update) = updates.next().await {
                context.print_order(&update.map_err(fail)?)?;
            }
        }
    }
    Ok(())
}

fn create_request(
    context: &Session,
    args: CreateArgs,
) -> anyhow::Result<Request<CreateOrderRequest>> {
    let mut request = context.order_request(CreateOrderRequest {
        customer_id: args.customer,
        items: args
            .items
            .into_iter()
            .map(|(product_id, quantity)| OrderItem {
                product_id,
                quantity,
                unit_price: None,
            })
            .collect(),
        payment_method: args.payment,
    })?;
    if let Some(key) = args.idempotency_key {
        let value = key
            .parse()
            .context("--idempotency-key must be printable ASCII")?;
        request.metadata_mut().insert("idempotency-key", value);
    }
    Ok(request)
}

/// An error for people: the code's name and the server's message, or a
/// plain "cannot reach" when there was no server to answer.
fn explain(status: Status, service: &str, url: &str) -> anyhow::Error {
    if status.code() == Code::Unavailable
        && (status.message().contains("transport") || status.message().contains("connect"))
    {
        return anyhow::anyhow!(
            "cannot reach the {service} service at {url}: {}",
            status.message()
        );
    }
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}
