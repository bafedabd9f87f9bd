//! Any bytes as a route's gRPC answer: the JSON written straight from them
//! must be the dynamic path's, byte for byte, or the writer must fall back.
//! Input: one byte picking the route, then the answer's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ordermesh_gateway::fuzzing::response_json(data);
});
