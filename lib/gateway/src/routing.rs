//! Route matching, done once per request by the outermost layer of the
//! gateway ([`route`]): the result rides in the request's extensions, where
//! the metrics layer reads its label and the dispatcher reads where to send
//! it. A request is one of: a page of the gateway's own, an annotated REST
//! route, a grpc-web call to a fronted service, or nothing the gateway has.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;

use crate::Gateway;
use crate::routes::{NoRoute, RouteTable};
use crate::template::PathBindings;

/// The gateway's own pages, by path and method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    Index,
    OpenApi,
    Healthz,
    Readyz,
    /// The development issuer's keys (404 when it is not in effect).
    Jwks,
    /// A development token for a customer (404 when it is not in effect).
    DevToken,
}

const PAGES: &[(&str, Method, Page)] = &[
    ("/", Method::GET, Page::Index),
    ("/openapi.json", Method::GET, Page::OpenApi),
    ("/healthz", Method::GET, Page::Healthz),
    ("/readyz", Method::GET, Page::Readyz),
    ("/.well-known/jwks.json", Method::GET, Page::Jwks),
    ("/v1/dev/token", Method::POST, Page::DevToken),
];

/// What a request is, as matched once.
#[derive(Clone, Debug)]
pub enum Matched {
    Page {
        page: Page,
        label: &'static str,
    },
    /// An annotated route (by its index in the table) and its path bindings.
    Rest {
        index: usize,
        bindings: PathBindings,
    },
    /// `/pkg.Service/Method` of a fronted service; `exposed` when the
    /// method is annotated (grpc-web may call only those).
    GrpcWeb {
        service: String,
        exposed: bool,
    },
    Unrouted(NoRoute),
}

impl Matched {
    pub fn classify(
        routes: &RouteTable,
        fronted: impl Fn(&str) -> bool,
        method: &Method,
        path: &str,
    ) -> Self {
        if let Some((text, allowed, page)) = PAGES.iter().find(|(text, _, _)| *text == path) {
            let head = *method == Method::HEAD && *allowed == Method::GET;
            return if method == allowed || head {
                Matched::Page {
                    page: *page,
                    label: text,
                }
            } else {
                Matched::Unrouted(NoRoute::MethodNotAllowed(vec![allowed.clone()]))
            };
        }
        if let Some((service, rpc)) = path.strip_prefix('/').and_then(|p| p.split_once('/'))
            && !rpc.is_empty()
            && !rpc.contains('/')
            && fronted(service)
        {
            return Matched::GrpcWeb {
                service: service.to_owned(),
                exposed: routes.exposes(path),
            };
        }
        match routes.find_index(method, path) {
            Ok((index, bindings)) => Matched::Rest { index, bindings },
            Err(no_route) => Matched::Unrouted(no_route),
        }
    }

    /// How metrics and spans name it: a page's path, a route's template, a
    /// grpc-web method's gRPC path, or "other" (so clients cannot grow the
    /// label set with made-up paths).
    pub fn label<'a>(&'a self, routes: &'a RouteTable, path: &'a str) -> &'a str {
        match self {
            Matched::Page { label, .. } => label,
            Matched::Rest { index, .. } => routes.get(*index).map_or("other", |r| r.label.as_str()),
            Matched::GrpcWeb { exposed: true, .. } => path,
            Matched::GrpcWeb { exposed: false, .. } | Matched::Unrouted(_) => "other",
        }
    }
}

/// The routing layer: matches the request and leaves the match in its
/// extensions for the layers and handlers inside; marks every answer
/// `X-Content-Type-Options: nosniff`.
pub async fn route(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let matched = Matched::classify(
        &gateway.routes,
        |service| gateway.upstreams.get(service).is_some(),
        request.method(),
        request.uri().path(),
    );
    request.extensions_mut().insert(matched);
    let mut response = next.run(request).await;
    // Every answer is what its Content-Type says, never sniffed into HTML.
    response.headers_mut().insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::from_pool(crate::descriptors(), |_| true).unwrap()
    }

    fn classify(method: Method, path: &str) -> Matched {
        Matched::classify(&table(), |s| s.starts_with("ordermesh."), &method, path)
    }

    #[test]
    fn each_kind_of_request_is_told_apart_once() {
        let table = table();
        let label = |m: &Matched, path: &'static str| m.label(&table, path).to_owned();
        let page = classify(Method::GET, "/openapi.json");
        assert!(matches!(
            page,
            Matched::Page {
                page: Page::OpenApi,
                ..
            }
        ));
        assert_eq!(label(&page, "/openapi.json"), "/openapi.json");
        assert!(matches!(
            classify(Method::POST, "/healthz"),
            Matched::Unrouted(NoRoute::MethodNotAllowed(_))
        ));

        let rest = classify(Method::GET, "/v1/orders/ord_1");
        assert_eq!(
            label(&rest, "/v1/orders/ord_1"),
            "GET /v1/orders/{order_id}"
        );

        let path = "/ordermesh.order.v1.OrderService/GetOrder";
        let grpc_web = classify(Method::POST, path);
        assert!(matches!(grpc_web, Matched::GrpcWeb { exposed: true, .. }));
        assert_eq!(label(&grpc_web, path), path);
        let hidden = classify(
            Method::POST,
            "/ordermesh.inventory.v1.InventoryService/AdjustStock",
        );
        assert!(matches!(hidden, Matched::GrpcWeb { exposed: false, .. }));
        assert_eq!(label(&hidden, "/x"), "other");

        for path in [
            "/wp-admin/x",
            "/ordermesh.order.v1.OrderService/X1234",
            "/nope",
        ] {
            let matched = classify(Method::POST, path);
            assert_eq!(label(&matched, path), "other", "{path}");
        }
    }
}
