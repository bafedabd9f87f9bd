//! Every way a REST call can fail, as an HTTP status and a JSON body shaped
//! like google.rpc.Status: `{"code", "message", "details"}`. The gRPC code
//! maps to HTTP by grpc-gateway's table.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prost_reflect::DynamicMessage;
use serde_json::{Value, json};
use tonic::Code;

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
    /// The service answered with an error.
    #[error("{}", .0.message())]
    Upstream(tonic::Status),
    /// The gateway itself failed; the cause is logged.
    #[error("internal error")]
    Internal(String),
}

/// grpc-gateway's mapping of gRPC codes to HTTP statuses.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl GatewayError {
    /// The gRPC code and HTTP status this error answers with.
    fn codes(&self) -> (Code, StatusCode) {
        match self {
            GatewayError::BadRequest(_) => (Code::InvalidArgument, StatusCode::BAD_REQUEST),
            GatewayError::NotFound(_) => (Code::NotFound, StatusCode::NOT_FOUND),
            GatewayError::MethodNotAllowed { .. } => {
                (Code::Unimplemented, StatusCode::METHOD_NOT_ALLOWED)
            }
            GatewayError::UnsupportedMediaType(_) => {
                (Code::InvalidArgument, StatusCode::UNSUPPORTED_MEDIA_TYPE)
            }
            GatewayError::PayloadTooLarge { .. } => {
                (Code::ResourceExhausted, StatusCode::PAYLOAD_TOO_LARGE)
            }
            GatewayError::Upstream(status) => (status.code(), http_status(status.code())),
            GatewayError::Internal(_) => (Code::Internal, StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    /// The google.rpc.Status-shaped body.
    pub fn body(&self) -> Value {
        let (code, _) = self.codes();
        let details = match self {
            GatewayError::Upstream(status) => details(status),
            _ => Vec::new(),
        };
        json!({ "code": code as i32, "message": self.to_string(), "details": details })
    }

    pub fn status(&self) -> StatusCode {
        self.codes().1
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
        if let GatewayError::MethodNotAllowed { allowed, .. } = &self
            && let Ok(value) = allowed.parse()
        {
            response.headers_mut().insert(http::header::ALLOW, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn upstream_errors_keep_their_reason() {
        let status = ordermesh_runtime::status::with_reason(
            Code::FailedPrecondition,
            "OUT_OF_STOCK",
            "out of stock: sku-scale",
            [],
        );
        let error = GatewayError::Upstream(status);
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        let body = error.body();
        assert_eq!(body["code"], 9);
        assert_eq!(body["message"], "out of stock: sku-scale");
        assert_eq!(body["details"][0]["reason"], "OUT_OF_STOCK");
    }
}
