//! Compiles the echo server's one-RPC proto with protox (no system `protoc`),
//! as `lib/proto/build.rs` does for the real contracts.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let proto_root = manifest.join("proto");
    // google/api/annotations.proto, which the echo RPC's annotation imports.
    let contracts = manifest.join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());
    let mut compiler = protox::Compiler::new([&proto_root, &contracts])?;
    compiler.open_files(["echo.proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
