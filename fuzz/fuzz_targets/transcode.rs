//! Any request line, query and body through route matching and the
//! JSON/path/query → protobuf transcoding: errors are fine, panics are not.
//! Input: METHOD \n PATH[?QUERY] \n BODY.
#![no_main]

use libfuzzer_sys::fuzz_target;

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
    ordermesh_gateway::fuzzing::transcode(&method, path, query, body);
});
