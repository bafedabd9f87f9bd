//! HTTP headers into gRPC metadata and back, by allow-list, on REST and
//! grpc-web alike.
//!
//! A client's headers are not trusted as metadata: a sidecar behind the
//! gateway obeys `x-envoy-max-retries`, a service reads `grpc-*` as protocol,
//! and hop-by-hop headers belong to one connection. So only these pass:
//! - the documented headers ([`FORWARDED`]): the caller's token, the
//!   idempotency key, the request id and the W3C and B3 trace headers;
//! - the operator's `--forward-header NAME`s;
//! - `Grpc-Metadata-NAME` (the grpc-gateway spelling) as `NAME`, only for
//!   `Idempotency-Key` ([`PREFIXED`]) and the operator's names, so
//!   `Grpc-Metadata-Idempotency-Key` works and neither
//!   `Grpc-Metadata-X-Envoy-Max-Retries` nor a second `authorization`
//!   behind the one the gateway checked does;
//! - the deadline, read from `Grpc-Timeout` by [`timeout_from`] (REST) or
//!   kept as the protocol's own (grpc-web, [`grpc_request_headers`]).
//!
//! [`denied`] always wins, even over the operator's list.

use std::str::FromStr;
use std::time::Duration;

use http::HeaderMap;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

const GRPC_METADATA_PREFIX: &str = "grpc-metadata-";
/// Headers every call forwards as they are: the caller's token is the
/// services' one identity contract; the rest tie a call to its retries and
/// its trace.
pub const FORWARDED: &[&str] = &[
    "authorization",
    "idempotency-key",
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];
/// The documented headers also accepted as `Grpc-Metadata-NAME`.
pub const PREFIXED: &[&str] = &["idempotency-key"];
/// The gRPC protocol's own request headers, kept on a grpc-web or gRPC call
/// passed through (`te` only as `trailers`).
const GRPC_PROTOCOL: &[&str] = &[
    "content-type",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
];
/// Headers of one HTTP connection (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Whether a header may never become metadata: Envoy's controls, gRPC's
/// reserved names, and hop-by-hop headers.
pub fn denied(name: &str) -> bool {
    name.starts_with("x-envoy-")
        || name.starts_with("grpc-")
        || name.starts_with(':')
        || HOP_BY_HOP.contains(&name)
}

fn allowed(name: &str, prefixed: bool, allow_list: &[String]) -> bool {
    let documented = if prefixed { PREFIXED } else { FORWARDED };
    !denied(name) && (documented.contains(&name) || allow_list.iter().any(|a| a == name))
}

/// The metadata a request forwards: the documented headers, the operator's
/// allow-list, and `Grpc-Metadata-NAME` for the names allowed so.
pub fn metadata_from(headers: &HeaderMap, allow_list: &[String]) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        let (key, prefixed) = match name.strip_prefix(GRPC_METADATA_PREFIX) {
            Some(key) => (key, true),
            None => (name, false),
        };
        if !allowed(key, prefixed, allow_list) {
            continue;
        }
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_str(key),
            MetadataValue::try_from(value.as_bytes()),
        ) {
            metadata.append(key, value);
        }
    }
    metadata
}

/// The headers of a gRPC call passed through (grpc-web after tonic-web, or
/// gRPC over HTTP/2): the protocol's own plus [`metadata_from`]; every
/// other client header is dropped.
pub fn grpc_request_headers(headers: &HeaderMap, allow_list: &[String]) -> HeaderMap {
    let mut out = metadata_from(headers, allow_list).into_headers();
    for name in GRPC_PROTOCOL {
        for value in headers.get_all(*name) {
            out.append(*name, value.clone());
        }
    }
    if headers
        .get(http::header::TE)
        .is_some_and(|v| v == "trailers")
    {
        out.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
    out
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

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_allowed_headers_become_metadata() {
        let headers = headers(&[
            ("idempotency-key", "k1"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-custom", "yes"),
            ("cookie", "secret"),
            ("grpc-metadata-tenant", "acme"),
            ("grpc-metadata-idempotency-key", "k2"),
            ("grpc-metadata-authorization", "Bearer second"),
            ("grpc-metadata-x-custom", "also"),
            ("x-envoy-max-retries", "10"),
            ("grpc-metadata-x-envoy-max-retries", "10"),
            ("grpc-metadata-grpc-status", "0"),
            ("grpc-metadata-connection", "close"),
            ("connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic eA=="),
        ]);
        let metadata = metadata_from(&headers, &["x-custom".to_owned()]);
        let keys: Vec<&str> = metadata
            .get_all("idempotency-key")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(keys, ["k1", "k2"]);
        assert!(metadata.get("authorization").is_none(), "only as itself");
        assert!(metadata.get("traceparent").is_some());
        assert_eq!(metadata.get_all("x-custom").iter().count(), 2);
        let keys: Vec<String> = metadata
            .keys()
            .map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => k.as_str().to_owned(),
                tonic::metadata::KeyRef::Binary(k) => k.as_str().to_owned(),
            })
            .collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
    }

    #[test]
    fn the_operator_cannot_allow_a_denied_header() {
        let headers = headers(&[("x-envoy-retry-on", "5xx"), ("te", "trailers")]);
        let allow = ["x-envoy-retry-on".to_owned(), "te".to_owned()];
        assert!(metadata_from(&headers, &allow).is_empty());
    }

    #[test]
    fn a_passed_through_call_keeps_the_protocol_and_the_allowed_metadata() {
        let headers = headers(&[
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", "2S"),
            ("grpc-accept-encoding", "gzip"),
            ("authorization", "Bearer t"),
            ("x-envoy-max-retries", "10"),
            ("x-envoy-upstream-rq-timeout-ms", "1"),
            ("grpc-metadata-x-envoy-max-retries", "10"),
            ("x-grpc-web", "1"),
            ("cookie", "secret"),
            ("keep-alive", "timeout=5"),
        ]);
        let out = grpc_request_headers(&headers, &[]);
        let mut names: Vec<&str> = out.keys().map(http::HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "authorization",
                "content-type",
                "grpc-accept-encoding",
                "grpc-timeout",
                "te"
            ]
        );
        let odd = self::headers(&[("te", "gzip")]);
        assert!(grpc_request_headers(&odd, &[]).is_empty());
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
