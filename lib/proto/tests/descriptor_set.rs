//! The committed `proto/ordermesh.binpb` (Envoy's transcoder loads it) is the
//! descriptor set the code was built from.

#[test]
fn committed_descriptor_set_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto/ordermesh.binpb");
    let committed = std::fs::read(path).unwrap_or_default();
    assert!(
        committed == ordermesh_proto::FILE_DESCRIPTOR_SET,
        "proto/ordermesh.binpb is stale or missing: run `make proto` and commit it"
    );
}
