//! The gateway's flags. Its peer URLs are named apart from the order
//! service's own `--inventory-url`, since `all` takes both sets of flags.

use std::time::Duration;

/// The gateway's flags. Its peer URLs are named apart from the order
/// service's own `--inventory-url`, since `all` takes both sets of flags.
#[derive(Clone, Debug, clap::Args)]
pub struct GatewaySettings {
    /// Where the gateway listens for HTTP (REST, grpc-web, the web page).
    #[arg(
        id = "gateway_addr",
        long = "gateway-addr",
        env = "ORDERMESH_GATEWAY_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: std::net::SocketAddr,
    /// The order service the gateway forwards to (shorthand for
    /// `--upstream ordermesh.order.v1.OrderService=URL`).
    #[arg(
        long,
        env = "ORDERMESH_GATEWAY_ORDER_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub gateway_order_url: String,
    /// The inventory service, for the product reads (shorthand for
    /// `--upstream ordermesh.inventory.v1.InventoryService=URL`).
    #[arg(
        long,
        env = "ORDERMESH_GATEWAY_INVENTORY_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub gateway_inventory_url: String,
    /// The payment service (shorthand for `--upstream
    /// ordermesh.payment.v1.PaymentService=URL`); none of its RPCs is
    /// annotated, so nothing of it is reachable through the gateway.
    #[arg(
        long,
        env = "ORDERMESH_GATEWAY_PAYMENT_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub gateway_payment_url: String,
    /// A gRPC service to front, `FULL.SERVICE.Name=URL` (repeat it, or
    /// separate with commas): its `google.api.http`-annotated RPCs become
    /// REST routes and its annotated methods are open to grpc-web. The
    /// three ordermesh services are fronted by default.
    #[arg(long = "upstream", env = "ORDERMESH_GATEWAY_UPSTREAMS", value_delimiter = ',', value_parser = parse_upstream)]
    pub upstreams: Vec<(String, String)>,
    /// A FileDescriptorSet (`protoc --include_imports -o`, `buf build -o`)
    /// with services to front besides ordermesh's own (repeat it, or
    /// separate with commas).
    #[arg(
        long = "descriptor-set",
        env = "ORDERMESH_GATEWAY_DESCRIPTOR_SETS",
        value_delimiter = ','
    )]
    pub descriptor_sets: Vec<std::path::PathBuf>,
    /// A fronted service whose calls need a customer's bearer token: the
    /// gateway refuses them without a valid one (401) and forwards the token
    /// (repeat it, or separate with commas).
    #[arg(long = "require-token-for", env = "ORDERMESH_GATEWAY_TOKEN_SERVICES", value_delimiter = ',', default_value = ORDER_SERVICE)]
    pub token_services: Vec<String>,
    /// Longest a REST call may take (a shorter `Grpc-Timeout` header wins).
    #[arg(long, env = "ORDERMESH_GATEWAY_REQUEST_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// A watch (Server-Sent Events or grpc-web stream) that delivered
    /// nothing for this long is ended with an error event; clients watch
    /// again (browsers' EventSource does by itself).
    #[arg(long, env = "ORDERMESH_GATEWAY_WATCH_IDLE_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub watch_idle_timeout: Duration,
    /// Longest a watch lives at the gateway before it is ended the same way.
    #[arg(long, env = "ORDERMESH_GATEWAY_WATCH_MAX_LIFETIME", default_value = "1h", value_parser = humantime::parse_duration)]
    pub watch_max_lifetime: Duration,
    /// Largest request body, in bytes; larger ones get 413.
    #[arg(long, env = "ORDERMESH_GATEWAY_BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,
    /// Requests handled at once; beyond it the gateway answers 503 with
    /// Retry-After at once instead of queueing (load shedding).
    #[arg(long, env = "ORDERMESH_GATEWAY_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub gateway_max_in_flight: usize,
    /// Ignore unknown JSON fields instead of refusing them.
    #[arg(long, env = "ORDERMESH_GATEWAY_IGNORE_UNKNOWN_FIELDS")]
    pub ignore_unknown_fields: bool,
    /// Another request header passed on as gRPC metadata (lower case;
    /// repeat it, or separate with commas), directly or as
    /// `Grpc-Metadata-NAME`. Besides these only `authorization`,
    /// `idempotency-key`, `x-request-id` and the trace headers pass;
    /// `x-envoy-*`, `grpc-*` and hop-by-hop headers never do.
    #[arg(
        long = "forward-header",
        env = "ORDERMESH_GATEWAY_FORWARD_HEADERS",
        value_delimiter = ','
    )]
    pub forward_headers: Vec<String>,
    /// An origin (`https://shop.example`) whose pages may call the gateway
    /// from a browser (CORS; repeat it, or separate with commas). None by
    /// default: only the gateway's own page (same origin) may.
    #[arg(
        long = "cors-allowed-origin",
        env = "ORDERMESH_CORS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allowed_origins: Vec<String>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        ordermesh_runtime::settings::defaults()
    }
}

fn parse_upstream(value: &str) -> Result<(String, String), String> {
    let (service, url) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?} is not FULL.SERVICE.Name=URL"))?;
    if service.is_empty() || url.is_empty() {
        return Err(format!("{value:?} is not FULL.SERVICE.Name=URL"));
    }
    Ok((service.to_owned(), url.to_owned()))
}

impl GatewaySettings {
    /// Every fronted service and its URL: the ordermesh services at their
    /// URL flags, then each `--upstream` (which wins over a shorthand).
    pub fn upstream_urls(&self) -> Vec<(String, String)> {
        let mut urls: Vec<(String, String)> = vec![
            (ORDER_SERVICE.into(), self.gateway_order_url.clone()),
            (INVENTORY_SERVICE.into(), self.gateway_inventory_url.clone()),
            (PAYMENT_SERVICE.into(), self.gateway_payment_url.clone()),
        ];
        for (service, url) in &self.upstreams {
            match urls.iter_mut().find(|(known, _)| known == service) {
                Some(entry) => entry.1 = url.clone(),
                None => urls.push((service.clone(), url.clone())),
            }
        }
        urls
    }
}

pub const ORDER_SERVICE: &str = "ordermesh.order.v1.OrderService";
pub const INVENTORY_SERVICE: &str = "ordermesh.inventory.v1.InventoryService";
pub const PAYMENT_SERVICE: &str = "ordermesh.payment.v1.PaymentService";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_default_to_the_three_services_and_can_be_added_or_moved() {
        let mut settings = GatewaySettings::default();
        assert_eq!(settings.upstream_urls().len(), 3);
        settings.upstreams = vec![
            ("echo.v1.Echo".into(), "http://10.0.0.9:1".into()),
            (ORDER_SERVICE.into(), "http://10.0.0.1:2".into()),
        ];
        let urls = settings.upstream_urls();
        assert_eq!(urls.len(), 4);
        assert!(urls.contains(&(ORDER_SERVICE.into(), "http://10.0.0.1:2".into())));
        assert!(urls.contains(&("echo.v1.Echo".into(), "http://10.0.0.9:1".into())));
        assert!(parse_upstream("nourl").is_err());
        assert!(parse_upstream("=http://x").is_err());
    }
}
