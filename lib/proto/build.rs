//! Compiles `proto/` with protox (pure Rust, so no system `protoc` is needed),
//! generates the tonic code, and writes the descriptor set that server
//! reflection, the REST gateway and Envoy's transcoder load.

use std::path::PathBuf;

const PROTO_FILES: &[&str] = &[
    "ordermesh/order/v1/order.proto",
    "ordermesh/inventory/v1/inventory.proto",
    "ordermesh/payment/v1/payment.proto",
    "ordermesh/events/v1/events.proto",
    // Not used by the code (tonic-types has them), but in the descriptor set
    // so Envoy's transcoder and grpcurl can print error details.
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(PROTO_FILES)?;
    // Encoded by protox itself: prost_types drops the options' extensions
    // (the google.api.http annotations) that the gateway and Envoy read.
    let encoded = compiler.encode_file_descriptor_set();
    let descriptor_set = compiler.file_descriptor_set();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("ordermesh_descriptor.bin"), encoded)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptor_set)?;
    Ok(())
}
