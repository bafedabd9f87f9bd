//! ordermesh's gRPC contracts, generated from `proto/` at build time.
//!
//! [`FILE_DESCRIPTOR_SET`] holds every ordermesh file and its imports
//! (including `google/api/http.proto`), so it serves reflection and HTTP
//! transcoding alike.

pub mod convert;

/// The encoded `google.protobuf.FileDescriptorSet` of all ordermesh protos.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ordermesh_descriptor.bin"));

pub mod google {
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

pub mod common {
    pub mod v1 {
        tonic::include_proto!("ordermesh.common.v1");
    }
}

pub mod order {
    pub mod v1 {
        tonic::include_proto!("ordermesh.order.v1");
    }
}

pub mod inventory {
    pub mod v1 {
        tonic::include_proto!("ordermesh.inventory.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("ordermesh.events.v1");
    }
}

pub mod payment {
    pub mod v1 {
        tonic::include_proto!("ordermesh.payment.v1");
    }
}
