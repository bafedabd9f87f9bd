//! Compiles `proto/` with protox (pure Rust, so no system `protoc` is needed),
//! generates the tonic code, and writes the descriptor set that server
//! reflection, the REST gateway and Envoy's transcoder load.

use std::path::PathBuf;

use prost::Message;

const PROTO_FILES: &[&str] = &[
    "ordermesh/order/v1/order.proto",
    "ordermesh/inventory/v1/inventory.proto",
    "ordermesh/payment/v1/payment.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let files: Vec<PathBuf> = PROTO_FILES.iter().map(|f| proto_root.join(f)).collect();
    let descriptor_set = protox::compile(&files, [&proto_root])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("ordermesh_descriptor.bin"),
        descriptor_set.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptor_set)?;
    Ok(())
}
