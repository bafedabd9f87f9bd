//! Any request line, query and body through route matching and the
//! JSON/path/query → protobuf transcoding: errors are fine, panics are not.
//! Input: METHOD \n PATH[?QUERY] \n BODY.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordermesh_gateway::routes::RouteTable;
use std::sync::OnceLock;

fn routes() -> &'static RouteTable {
    static ROUTES: OnceLock<RouteTable> = OnceLock::new();
    ROUTES.get_or_init(|| {
        RouteTable::from_pool(ordermesh_gateway::descriptors()).expect("the built-in routes")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return;
    };
    let body = parts.next().unwrap_or_default();
    let Ok(method) = http::Method::from_bytes(method) else {
        return;
    };
    let Ok(target) = std::str::from_utf8(target) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    if let Ok((route, bindings)) = routes().find(&method, path) {
        for ignore_unknown in [false, true] {
            let _ = ordermesh_gateway::transcode::request_message(
                route,
                bindings.clone(),
                query,
                body,
                Some("application/json"),
                ignore_unknown,
            );
        }
    }
});
