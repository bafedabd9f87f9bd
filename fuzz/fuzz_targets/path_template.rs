//! Any google.api.http path template, and any path matched against it.
//! Input: TEMPLATE \n PATH.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, path) = text.split_once('\n').unwrap_or((text, "/"));
    ordermesh_gateway::fuzzing::path_template(template, path);
});
