//! Every way a REST call can fail, as an HTTP status and a JSON body shaped
//! like google.rpc.Status: `{"code", "message", "details"}`. Each error
//! describes itself as every ordermesh error does (`ordermesh_domain::error`);
//! the kind maps to HTTP by grpc-gateway's table, in [`http_status`].

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ordermesh_domain::{Describe, ErrorDescription, ErrorKind};
use ordermesh_identity::{AuthError, REALM};
use ordermesh_runtime::status::{code, describe_status};
use prost_reflect::DynamicMessage;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed; it never reaches a service.
    #[error("{0}")]
    BadRequest(String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("{method} is not allowed here; use {allowed}")]
    MethodNotAllowed { method: String, allowed: String },
    #[error("content type must be application/json, got {0:?}")]
    UnsupportedMediaType(String),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// Shed at capacity: retry soon, elsewhere or here.
    #[error("the gateway is at capacity; retry in a second")]
    Overloaded,
    #[error("the request took longer than the gateway's limit of {0}")]
    Timeout(String),
    /// Over the watch budget (per client or in all): retry later.
    #[error("{0}")]
    TooManyWatches(ordermesh_runtime::watches::WatchRefused),
    /// No valid bearer token for a call that needs one.
    #[error("{}", .0.description())]
    Unauthenticated(AuthError),
    /// The service answered with an error.
    #[error("{}", .0.message())]
    Upstream(tonic::Status),
    /// The gateway itself failed; the cause is logged.
    #[error("internal error")]
    Internal(String),
}

impl Describe for GatewayError {
    fn describe(&self) -> ErrorDescription {
        let kind = match self {
            GatewayError::BadRequest(_) => ErrorKind::InvalidArgument,
            GatewayError::NotFound(_) => ErrorKind::NotFound,
            GatewayError::MethodNotAllowed { .. } => ErrorKind::Unimplemented,
            GatewayError::UnsupportedMediaType(_) => ErrorKind::InvalidArgument,
            GatewayError::PayloadTooLarge { .. } => ErrorKind::ResourceExhausted,
            GatewayError::Overloaded => ErrorKind::Unavailable,
            GatewayError::Timeout(_) => ErrorKind::DeadlineExceeded,
            GatewayError::TooManyWatches(_) => ErrorKind::ResourceExhausted,
            // The issuer's keys could not be had: our fault, not the caller's.
            GatewayError::Unauthenticated(refused) if refused.is_unavailable() => {
                ErrorKind::Unavailable
            }
            GatewayError::Unauthenticated(_) => ErrorKind::Unauthenticated,
            GatewayError::Upstream(status) => return describe_status(status),
            GatewayError::Internal(_) => ErrorKind::Internal,
        };
        ErrorDescription::new(kind, self.to_string())
    }
}

/// grpc-gateway's mapping of gRPC codes to HTTP statuses.
pub fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        ErrorKind::Unknown | ErrorKind::Internal | ErrorKind::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        ErrorKind::InvalidArgument | ErrorKind::FailedPrecondition | ErrorKind::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Aborted => StatusCode::CONFLICT,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl GatewayError {
    /// The HTTP status this error answers with: the kind's, but for the
    /// errors HTTP has a closer word for.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            // 400 for a malformed header, as RFC 6750 says.
            GatewayError::Unauthenticated(refused) => refused.http_status(),
            other => http_status(other.describe().kind),
        }
    }

    /// The google.rpc.Status-shaped body.
    pub fn body(&self) -> Value {
        let described = self.describe();
        let details = match self {
            GatewayError::Upstream(status) => details(status),
            _ => Vec::new(),
        };
        json!({
            "code": code(described.kind) as i32,
            "message": self.to_string(),
            "details": details,
        })
    }
}

/// The status's details (`grpc-status-details-bin`, a google.rpc.Status),
/// each in the JSON form of google.protobuf.Any, resolved through the
/// descriptor set as Envoy's transcoder does; details of a type it does not
/// know are left out rather than failing the whole reply.
fn details(status: &tonic::Status) -> Vec<Value> {
    if status.details().is_empty() {
        return Vec::new();
    }
    let Some(descriptor) = crate::descriptors().get_message_by_name("google.rpc.Status") else {
        return Vec::new();
    };
    let Ok(decoded) = DynamicMessage::decode(descriptor, status.details()) else {
        return Vec::new();
    };
    let Some(details) = decoded.get_field_by_name("details") else {
        return Vec::new();
    };
    let Some(list) = details.as_list() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|any| any.as_message())
        .filter_map(|any| crate::transcode::to_json(any).ok())
        .filter_map(|json| serde_json::from_str(&json).ok())
        .collect()
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        if let GatewayError::Internal(cause) = &self {
            tracing::error!(cause, "gateway error");
        }
        let status = self.status();
        let mut response = (status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        match &self {
            GatewayError::MethodNotAllowed { allowed, .. } => {
                if let Ok(value) = allowed.parse() {
                    headers.insert(http::header::ALLOW, value);
                }
            }
            GatewayError::Overloaded => {
                headers.insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("1"),
                );
            }
            GatewayError::TooManyWatches(_) => {
                let wait = ordermesh_runtime::watches::RETRY_AFTER.as_secs();
                headers.insert(http::header::RETRY_AFTER, wait.into());
            }
            _ => {}
        }
        // RFC 6750: every 401 names the scheme to use, and why the token
        // was refused.
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match &self {
                GatewayError::Unauthenticated(refused) => refused.www_authenticate(),
                _ => None,
            }
            .unwrap_or_else(|| format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""));
            if let Ok(value) = challenge.parse() {
                headers.insert(http::header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordermesh_runtime::status::{described, kind};
    use tonic::Code;

    #[test]
    fn grpc_gateway_table() {
        let table = [
            (Code::Cancelled, 499),
            (Code::Unknown, 500),
            (Code::InvalidArgument, 400),
            (Code::DeadlineExceeded, 504),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::PermissionDenied, 403),
            (Code::Unauthenticated, 401),
            (Code::ResourceExhausted, 429),
            (Code::FailedPrecondition, 400),
            (Code::Aborted, 409),
            (Code::OutOfRange, 400),
            (Code::Unimplemented, 501),
            (Code::Internal, 500),
            (Code::Unavailable, 503),
            (Code::DataLoss, 500),
        ];
        for (code, http) in table {
            let kind = kind(code).expect("a failure");
            assert_eq!(http_status(kind).as_u16(), http, "{code:?}");
            let error = GatewayError::Upstream(tonic::Status::new(code, "x"));
            assert_eq!(error.status().as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn upstream_errors_keep_their_reason() {
        let status = described(
            &ErrorDescription::new(ErrorKind::FailedPrecondition, "out of stock: sku-scale")
                .with_reason("OUT_OF_STOCK"),
        );
        let error = GatewayError::Upstream(status);
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        let body = error.body();
        assert_eq!(body["code"], 9);
        assert_eq!(body["message"], "out of stock: sku-scale");
        assert_eq!(body["details"][0]["reason"], "OUT_OF_STOCK");
    }

    #[test]
    fn the_gateways_own_errors_have_bodies_and_their_headers() {
        let shed = GatewayError::Overloaded.into_response();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()[http::header::RETRY_AFTER], "1");
        assert_eq!(GatewayError::Overloaded.body()["code"], 14);
        let late = GatewayError::Timeout("15s".into());
        assert_eq!(late.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(late.body()["code"], 4);
        let wrong = GatewayError::MethodNotAllowed {
            method: "PUT".into(),
            allowed: "GET, POST".into(),
        };
        assert_eq!(wrong.body()["code"], 12);
        assert_eq!(
            wrong.into_response().headers()[http::header::ALLOW],
            "GET, POST"
        );
    }
}
