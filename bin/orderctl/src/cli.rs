//! Command-line syntax.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "orderctl", version, about = "A client for ordermesh")]
pub struct Cli {
    /// The order service.
    #[arg(
        long,
        env = "ORDERCTL_ORDER_URL",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub order_url: String,
    /// The inventory service.
    #[arg(
        long,
        env = "ORDERCTL_INVENTORY_URL",
        default_value = "http://127.0.0.1:50052",
        global = true
    )]
    pub inventory_url: String,
    /// Deadline of each call.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,
    /// Print JSON (proto3 mapping) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The gateway, whose development issuer `login` asks for a token.
    #[arg(
        long,
        env = "ORDERCTL_GATEWAY_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub gateway_url: String,
    /// The bearer token to send, instead of the one `login` kept.
    #[arg(long, env = "ORDERCTL_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Where `login` keeps the token [default: $XDG_CONFIG_HOME/orderctl or
    /// ~/.config/orderctl].
    #[arg(long, env = "ORDERCTL_CONFIG_DIR", global = true)]
    pub config_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the catalog with its stock.
    Products,
    /// One product, or a stock adjustment.
    #[command(subcommand)]
    Product(ProductCommand),
    /// Place, read, list, watch or cancel orders.
    #[command(subcommand)]
    Order(OrderCommand),
    /// Sign in: a development token for CUSTOMER from the gateway (or the
    /// one given with --token), kept for the commands that follow.
    Login {
        customer: Option<String>,
        /// Ask for an operator's token (`orders:admin`).
        #[arg(long)]
        admin: bool,
    },
    /// Follow order or stock events (docs/events.md).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Print the kept token, e.g. `TOKEN=$(orderctl token)` for curl.
    Token,
    /// Forget the kept token.
    Logout,
    /// Probe a service: gRPC health for `http://HOST:PORT`, an HTTP GET
    /// that must answer 2xx for a URL with a path. Exits non-zero when not
    /// serving: a health check for Docker Compose and scripts.
    Health {
        url: String,
        /// The gRPC service to check; empty means the whole server.
        #[arg(long, default_value = "")]
        service: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events as they are published: from NATS JetStream through a
    /// durable consumer (acked once printed; a restart resumes after the
    /// last acked event), or with `--source gateway` from the gateway's SSE
    /// feed at --gateway-url (an operator's token: `orderctl login --admin`),
    /// resumed after the last event read when the connection drops.
    Tail(TailArgs),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Where the events come from.
    #[arg(long, value_enum, default_value = "nats")]
    pub source: TailSource,
    /// The NATS server the relays publish to.
    #[arg(
        long,
        env = "ORDERMESH_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// A NATS credentials file.
    #[arg(long, env = "ORDERMESH_NATS_CREDS")]
    pub nats_creds: Option<std::path::PathBuf>,
    /// Which events.
    #[arg(long, value_enum, default_value = "orders")]
    pub stream: EventStream,
    /// The durable consumer's name (NATS): the same name resumes where it
    /// stopped.
    #[arg(long, default_value = "orderctl")]
    pub durable: String,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TailSource {
    /// NATS JetStream (--nats-url), through the durable consumer --durable.
    Nats,
    /// The gateway's Server-Sent Events (`GET /v1/events:watch`), which
    /// need no broker.
    Gateway,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum EventStream {
    /// `ORDERMESH_ORDERS`: placed, confirmed, failed, cancelled, refunded.
    Orders,
    /// `ORDERMESH_STOCK`: changed, low.
    Stock,
}

#[derive(Debug, Subcommand)]
pub enum ProductCommand {
    /// Show one product.
    Get { product_id: String },
    /// Add (or, negative, remove) stock: `--delta 10`, `--delta=-3`.
    Adjust {
        product_id: String,
        #[arg(long, allow_negative_numbers = true)]
        delta: i32,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Place an order and wait for its outcome.
    Create(CreateArgs),
    /// Show one order.
    Get { order_id: String },
    /// Your orders, newest first (an operator: a customer's, or everyone's).
    List {
        #[arg(long, default_value = "")]
        customer: String,
        #[arg(long, default_value_t = 20)]
        page_size: i32,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
    /// Cancel a confirmed order (refund and restock).
    Cancel { order_id: String },
    /// Print the order's states as they change, until it is final.
    Watch { order_id: String },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The signed-in customer, if given (the token decides).
    #[arg(long, default_value = "")]
    pub customer: String,
    /// A line as SKU:QUANTITY; repeat for more lines.
    #[arg(long = "item", required = true, value_parser = parse_item)]
    pub items: Vec<(String, i32)>,
    /// A payment-method token, e.g. pm_card_visa.
    #[arg(long)]
    pub payment: String,
    /// Makes retrying this command safe: the same key returns the same order.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// Parses `SKU:QUANTITY`.
pub fn parse_item(value: &str) -> Result<(String, i32), String> {
    let usage = || format!("--item expects SKU:QUANTITY, got {value:?}");
    let (sku, quantity) = value.rsplit_once(':').ok_or_else(usage)?;
    if sku.is_empty() {
        return Err(usage());
    }
    let quantity = quantity.parse().map_err(|_| usage())?;
    Ok((sku.to_owned(), quantity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn syntax_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn items_parse_strictly() {
        assert_eq!(parse_item("sku-mug:2"), Ok(("sku-mug".into(), 2)));
        for bad in ["sku-mug", ":2", "sku:x", "sku:", ""] {
            assert!(parse_item(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn create_takes_repeated_items() {
        let cli = Cli::try_parse_from([
            "orderctl",
            "order",
            "create",
            "--customer",
            "c",
            "--item",
            "a:1",
            "--item",
            "b:2",
            "--payment",
            "pm_card_visa",
        ])
        .unwrap();
        let Command::Order(OrderCommand::Create(args)) = cli.command else {
            panic!("parsed {:?}", cli.command);
        };
        assert_eq!(args.items, vec![("a".into(), 1), ("b".into(), 2)]);
    }

    #[test]
    fn negative_deltas_parse() {
        let cli =
            Cli::try_parse_from(["orderctl", "product", "adjust", "sku", "--delta", "-3"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Product(ProductCommand::Adjust { delta: -3, .. })
        ));
    }
}
