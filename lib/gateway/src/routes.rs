//! The REST routes, read at start from the `google.api.http` annotations in
//! the descriptor set: annotate an RPC of a fronted service and it is
//! exposed, with no route written by hand. The annotated RPCs are also the
//! methods grpc-web may call: the annotations are the edge's whole API.

use std::sync::Arc;

use http::Method;
use prost_reflect::{DescriptorPool, FieldDescriptor, MethodDescriptor, Value};

use crate::response_json::ResponseWriter;
use crate::template::{PathBindings, PathTemplate};

/// Where the request message comes from besides the path.
#[derive(Clone, Debug)]
pub enum BodyRule {
    /// No body: the rest comes from query parameters.
    None,
    /// `body: "*"`: the whole message is the body.
    Whole,
    /// `body: "field"`: the body is that field; the rest from the query.
    Field(FieldDescriptor),
}

#[derive(Clone, Debug)]
pub struct Route {
    pub rpc: MethodDescriptor,
    pub http_method: Method,
    pub template: PathTemplate,
    pub body: BodyRule,
    /// The full name of the service that serves it.
    pub service: String,
    /// The gRPC path, e.g. `/ordermesh.order.v1.OrderService/CreateOrder`.
    pub grpc_path: String,
    /// How metrics and spans name it, e.g. `GET /v1/orders/{order_id}`.
    pub label: String,
    /// Writes a unary answer's JSON from its bytes.
    pub response: Arc<ResponseWriter>,
}

impl Route {
    pub fn server_streaming(&self) -> bool {
        self.rpc.is_server_streaming()
    }
}

#[derive(Clone, Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// Why no route answered a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoRoute {
    NotFound,
    /// The path exists for these other methods.
    MethodNotAllowed(Vec<Method>),
}

impl RouteTable {
    /// Every annotated RPC of the services `fronted` says the gateway fronts.
    pub fn from_pool(
        pool: &DescriptorPool,
        fronted: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Self> {
        let http = pool
            .get_extension_by_name("google.api.http")
            .ok_or_else(|| {
                anyhow::anyhow!("the descriptor set lacks google/api/annotations.proto")
            })?;
        let mut routes = Vec::new();
        for service in pool.services() {
            if !fronted(service.full_name()) {
                continue;
            }
            for rpc in service.methods() {
                let options = rpc.options();
                if !options.has_extension(&http) {
                    continue;
                }
                let Value::Message(rule) = options.get_extension(&http).into_owned() else {
                    continue;
                };
                let mut rules = vec![rule.clone()];
                if let Some(Value::List(more)) = rule
                    .get_field_by_name("additional_bindings")
                    .map(|v| v.into_owned())
                {
                    rules.extend(more.into_iter().filter_map(|v| match v {
                        Value::Message(m) => Some(m),
                        _ => None,
                    }));
                }
                for rule in rules {
                    routes.push(route(&rpc, &rule)?);
                }
            }
        }
        // Templates with a `:verb` first, so `/v1/orders/x:cancel` never
        // matches `/v1/orders/{order_id}` with an id of "x:cancel".
        routes.sort_by_key(|route| !route.template.has_verb());
        Ok(Self { routes })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for `method` and `path`, with its path bindings.
    pub fn find(&self, method: &Method, path: &str) -> Result<(&Route, PathBindings), NoRoute> {
        let (matched, bindings) = self.find_index(method, path)?;
        Ok((&self.routes[matched], bindings))
    }

    /// The route found by [`RouteTable::find_index`], by its index.
    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// Whether `grpc_path` (`/pkg.Service/Method`) is an annotated RPC,
    /// which grpc-web may call.
    pub fn exposes(&self, grpc_path: &str) -> bool {
        self.routes.iter().any(|route| route.grpc_path == grpc_path)
    }

    /// The fronted services that have at least one route.
    pub fn services(&self) -> Vec<&str> {
        let mut services: Vec<&str> = self.routes.iter().map(|r| r.service.as_str()).collect();
        services.sort_unstable();
        services.dedup();
        services
    }

    /// [`RouteTable::find`], answering the route's index.
    pub fn find_index(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<(usize, PathBindings), NoRoute> {
        let mut allowed = Vec::new();
        for (index, route) in self.routes.iter().enumerate() {
            if let Some(bindings) = route.template.matches(path) {
                if route.http_method == *method {
                    return Ok((index, bindings));
                }
                allowed.push(route.http_method.clone());
            }
        }
        allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        allowed.dedup();
        if allowed.is_empty() {
            Err(NoRoute::NotFound)
        } else {
            Err(NoRoute::MethodNotAllowed(allowed))
        }
    }
}

fn route(rpc: &MethodDescriptor, rule: &prost_reflect::DynamicMessage) -> anyhow::Result<Route> {
    let text = |name: &str| {
        rule.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_owned))
            .filter(|s| !s.is_empty())
    };
    let (http_method, path) = [
        ("get", Method::GET),
        ("post", Method::POST),
        ("put", Method::PUT),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ]
    .into_iter()
    .find_map(|(field, method)| text(field).map(|path| (method, path)))
    .or_else(|| {
        let custom = rule.get_field_by_name("custom")?;
        let custom = custom.as_message()?;
        let kind = custom.get_field_by_name("kind")?.as_str()?.to_owned();
        let path = custom.get_field_by_name("path")?.as_str()?.to_owned();
        Some((Method::from_bytes(kind.as_bytes()).ok()?, path))
    })
    .ok_or_else(|| anyhow::anyhow!("{}: google.api.http has no pattern", rpc.full_name()))?;
    let template = PathTemplate::parse(&path).map_err(anyhow::Error::msg)?;
    let body = match text("body").as_deref() {
        None => BodyRule::None,
        Some("*") => BodyRule::Whole,
        Some(field) => BodyRule::Field(rpc.input().get_field_by_name(field).ok_or_else(|| {
            anyhow::anyhow!("{}: body field {field:?} does not exist", rpc.full_name())
        })?),
    };
    Ok(Route {
        grpc_path: format!("/{}/{}", rpc.parent_service().full_name(), rpc.name()),
        label: format!("{} {}", http_method, template.text()),
        response: Arc::new(ResponseWriter::new(&rpc.output())),
        rpc: rpc.clone(),
        http_method,
        template,
        body,
        service: rpc.parent_service().full_name().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let pool = DescriptorPool::decode(ordermesh_proto::FILE_DESCRIPTOR_SET).unwrap();
        RouteTable::from_pool(&pool, |_| true).unwrap()
    }

    #[test]
    fn every_annotated_rpc_is_routed_and_nothing_else() {
        let table = table();
        let mut routed: Vec<String> = table
            .routes()
            .iter()
            .map(|r| format!("{} {} {}", r.http_method, r.template.text(), r.rpc.name()))
            .collect();
        routed.sort();
        assert_eq!(
            routed,
            vec![
                "GET /v1/events/stock:watch WatchStockEvents",
                "GET /v1/events:watch WatchEvents",
                "GET /v1/orders ListOrders",
                "GET /v1/orders/{order_id} GetOrder",
                "GET /v1/orders/{order_id}:watch WatchOrder",
                "GET /v1/products ListProducts",
                "GET /v1/products/{product_id} GetProduct",
                "GET /v1/products:watch WatchStock",
                "POST /v1/orders CreateOrder",
                "POST /v1/orders/{order_id}:cancel CancelOrder",
            ]
        );
    }

    #[test]
    fn finds_routes_by_method_and_path() {
        let table = table();
        let (route, bindings) = table
            .find(&Method::POST, "/v1/orders/ord_1:cancel")
            .unwrap();
        assert_eq!(route.rpc.name(), "CancelOrder");
        assert_eq!(
            bindings,
            vec![(vec!["order_id".to_owned()], "ord_1".to_owned())]
        );
        let (route, _) = table.find(&Method::GET, "/v1/orders/ord_1:watch").unwrap();
        assert!(route.server_streaming());
        assert_eq!(
            table.find(&Method::GET, "/v1/nothing").unwrap_err(),
            NoRoute::NotFound
        );
        assert_eq!(
            table.find(&Method::DELETE, "/v1/orders").unwrap_err(),
            NoRoute::MethodNotAllowed(vec![Method::GET, Method::POST])
        );
        // Inventory writes carry no annotation, so they are not reachable,
        // by REST or by grpc-web.
        assert!(
            table
                .routes()
                .iter()
                .all(|r| r.rpc.name() != "ReserveStock")
        );
        assert!(table.exposes("/ordermesh.inventory.v1.InventoryService/GetProduct"));
        assert!(!table.exposes("/ordermesh.inventory.v1.InventoryService/AdjustStock"));
        assert_eq!(
            table.services(),
            [
                "ordermesh.events.v1.EventService",
                "ordermesh.events.v1.StockEventService",
                "ordermesh.inventory.v1.InventoryService",
                "ordermesh.order.v1.OrderService"
            ]
        );
    }

    #[test]
    fn only_fronted_services_are_routed() {
        let pool = DescriptorPool::decode(ordermesh_proto::FILE_DESCRIPTOR_SET).unwrap();
        let table = RouteTable::from_pool(&pool, |s| s.ends_with("OrderService")).unwrap();
        assert!(
            table
                .routes()
                .iter()
                .all(|r| r.service == "ordermesh.order.v1.OrderService")
        );
        assert!(!table.exposes("/ordermesh.inventory.v1.InventoryService/GetProduct"));
    }
}
