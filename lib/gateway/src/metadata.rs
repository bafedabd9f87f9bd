//! HTTP headers into gRPC metadata and back, as grpc-gateway does:
//! `Grpc-Metadata-*` both ways.

use std::str::FromStr;
use std::time::Duration;

use http::HeaderMap;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

const GRPC_METADATA_PREFIX: &str = "grpc-metadata-";
/// Headers every call forwards as they are: the caller's token is the
/// services' one identity contract.
const ALWAYS_FORWARDED: &[&str] = &["authorization", "idempotency-key", "x-request-id"];

/// The metadata a request forwards: the always-forwarded headers, the
/// operator's allow-list, and `Grpc-Metadata-*` headers without the prefix.
pub fn metadata_from(headers: &HeaderMap, allow_list: &[String]) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        let key = if let Some(stripped) = name.strip_prefix(GRPC_METADATA_PREFIX) {
            stripped
        } else if ALWAYS_FORWARDED.contains(&name) || allow_list.iter().any(|a| a == name) {
            name
        } else {
            continue;
        };
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_str(key),
            MetadataValue::try_from(value.as_bytes()),
        ) {
            metadata.append(key, value);
        }
    }
    metadata
}

/// The caller's `Grpc-Timeout` (gRPC wire format), capped by the gateway's own.
pub fn timeout_from(headers: &HeaderMap, limit: Duration) -> Duration {
    let mut metadata = MetadataMap::new();
    if let Some(value) = headers
        .get("grpc-timeout")
        .and_then(|v| MetadataValue::try_from(v.as_bytes()).ok())
    {
        metadata.insert("grpc-timeout", value);
    }
    ordermesh_runtime::deadline::Deadline::from_metadata(&metadata)
        .map_or(limit, |deadline| deadline.remaining().min(limit))
}

/// Response metadata as `Grpc-Metadata-*` headers.
pub fn headers_from(metadata: &MetadataMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for entry in metadata.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(key, value) = entry {
            let key = key.as_str();
            if key.starts_with("grpc-") || matches!(key, "content-type" | "date" | "te") {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_str(&format!("{GRPC_METADATA_PREFIX}{key}")),
                http::HeaderValue::from_bytes(value.as_encoded_bytes()),
            ) {
                headers.append(name, value);
            }
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_become_metadata_the_grpc_gateway_way() {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", "k1".parse().unwrap());
        headers.insert("grpc-metadata-tenant", "acme".parse().unwrap());
        headers.insert("x-custom", "yes".parse().unwrap());
        headers.insert("cookie", "secret".parse().unwrap());
        let metadata = metadata_from(&headers, &["x-custom".to_owned()]);
        assert_eq!(metadata.get("idempotency-key").unwrap(), "k1");
        assert_eq!(metadata.get("tenant").unwrap(), "acme");
        assert_eq!(metadata.get("x-custom").unwrap(), "yes");
        assert!(
            metadata.get("cookie").is_none(),
            "only allowed headers pass"
        );
    }

    #[test]
    fn timeouts_take_the_shorter() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            timeout_from(&headers, Duration::from_secs(15)),
            Duration::from_secs(15)
        );
        headers.insert("grpc-timeout", "2S".parse().unwrap());
        assert!(timeout_from(&headers, Duration::from_secs(15)) <= Duration::from_secs(2));
    }

    #[test]
    fn response_metadata_comes_back_prefixed() {
        let mut metadata = MetadataMap::new();
        metadata.insert("x-order-shard", "3".parse().unwrap());
        metadata.insert("grpc-status", "0".parse().unwrap());
        let headers = headers_from(&metadata);
        assert_eq!(headers["grpc-metadata-x-order-shard"], "3");
        assert!(headers.get("grpc-metadata-grpc-status").is_none());
    }
}
