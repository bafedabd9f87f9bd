//! The small public surface the fuzz targets (`fuzz/`) drive: the path
//! template parser, the request transcoder and the answer writer, over the
//! built-in routes.

use std::sync::OnceLock;

use crate::routes::RouteTable;
use crate::template::PathTemplate;

/// Parses `template` and, if it parses, matches `path` against it.
pub fn path_template(template: &str, path: &str) {
    if let Ok(template) = PathTemplate::parse(template) {
        let _ = template.matches(path);
    }
}

fn routes() -> &'static RouteTable {
    static ROUTES: OnceLock<Option<RouteTable>> = OnceLock::new();
    ROUTES
        .get_or_init(|| RouteTable::from_pool(crate::descriptors(), |_| true).ok())
        .as_ref()
        .unwrap_or_else(|| unreachable!("the built-in routes build"))
}

/// Matches `method` and `path` and, if a route answers, builds its request
/// message from `query` and `body`, refusing and ignoring unknown fields.
pub fn transcode(method: &http::Method, path: &str, query: Option<&str>, body: &[u8]) {
    if let Ok((route, bindings)) = routes().find(method, path) {
        for ignore_unknown in [false, true] {
            let _ = crate::transcode::request_message(
                route,
                bindings.clone(),
                query,
                body,
                Some("application/json"),
                ignore_unknown,
            );
        }
    }
}

/// Reads `data` as the answer of the route its first byte picks, and
/// panics if the answer's JSON written from the bytes differs from the
/// dynamic path's (or exists where the dynamic path refuses the bytes).
pub fn response_json(data: &[u8]) {
    let Some((pick, answer)) = data.split_first() else {
        return;
    };
    let routes = routes().routes();
    let route = &routes[usize::from(*pick) % routes.len()];
    if let Ok(written) = route.response.write(answer) {
        let dynamic = crate::transcode::dynamic_answer_json(route.rpc.output(), answer).ok();
        assert_eq!(
            Some(&written),
            dynamic.as_ref(),
            "{}: the written JSON differs from the dynamic path's",
            route.label
        );
    }
}
