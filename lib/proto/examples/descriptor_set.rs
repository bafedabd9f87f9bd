//! Writes the descriptor set to a file: `make proto` keeps
//! `proto/ordermesh.binpb` (loaded by Envoy's gRPC-JSON transcoder) current.

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "proto/ordermesh.binpb".to_owned());
    std::fs::write(&path, ordermesh_proto::FILE_DESCRIPTOR_SET)?;
    println!(
        "wrote {path} ({} bytes)",
        ordermesh_proto::FILE_DESCRIPTOR_SET.len()
    );
    Ok(())
}
