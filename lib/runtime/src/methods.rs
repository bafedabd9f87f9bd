//! The gRPC methods an App knows by name: those of its descriptor sets,
//! health and reflection. Metric labels and span names come only from
//! here, so a client sending made-up paths adds nothing to `/metrics`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prost_reflect::DescriptorPool;

/// The label of every path that names no known method.
pub const OTHER: &str = "other";

/// Served outside any descriptor set of ours: reflection's own methods.
const REFLECTION: &[&str] = &[
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Known method paths (`/package.Service/Method`), each with whether the
/// server streams its answer; cheap to clone.
#[derive(Clone, Debug)]
pub struct KnownMethods(Arc<RwLock<HashMap<String, bool>>>);

impl KnownMethods {
    /// Every method of the built-in protos, gRPC health and reflection.
    pub fn builtin() -> Self {
        let known = Self(Arc::default());
        for set in [
            ordermesh_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            match DescriptorPool::decode(set) {
                Ok(pool) => known.learn(&pool),
                Err(error) => tracing::error!(%error, "a built-in descriptor set does not decode"),
            }
        }
        known
            .write()
            .extend(REFLECTION.iter().map(|path| ((*path).to_owned(), true)));
        known
    }

    /// Adds every method of `pool` (the gateway's `--descriptor-set` files).
    pub fn learn(&self, pool: &DescriptorPool) {
        let paths = pool.services().flat_map(|service| {
            let name = service.full_name().to_owned();
            service
                .methods()
                .map(move |method| {
                    let path = format!("/{name}/{}", method.name());
                    (path, method.is_server_streaming())
                })
                .collect::<Vec<_>>()
        });
        self.write().extend(paths);
    }

    /// `path` itself if it names a known method, else [`OTHER`].
    pub fn label<'a>(&self, path: &'a str) -> &'a str {
        let known = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(path);
        if known { path } else { OTHER }
    }

    /// Whether `path` is a known method whose server streams (a watch).
    pub fn is_server_streaming(&self, path: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(path)
            .copied()
            .unwrap_or(false)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, bool>> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_keep_their_names_and_the_rest_is_other() {
        let known = KnownMethods::builtin();
        for path in [
            "/ordermesh.order.v1.OrderService/GetOrder",
            "/ordermesh.inventory.v1.InventoryService/ReserveStock",
            "/grpc.health.v1.Health/Check",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(known.label(path), path);
        }
        for path in [
            "/ordermesh.order.v1.OrderService/Xrandom123",
            "/ordermesh.order.v1.OrderServiceX/GetOrder",
            "/grpc.health.v1.Health/Nope",
            "/",
            "/favicon.ico",
        ] {
            assert_eq!(known.label(path), OTHER, "{path}");
        }
        assert!(known.is_server_streaming("/ordermesh.order.v1.OrderService/WatchOrder"));
        assert!(!known.is_server_streaming("/ordermesh.order.v1.OrderService/GetOrder"));
        assert!(!known.is_server_streaming("/ordermesh.order.v1.OrderService/X"));
    }
}
