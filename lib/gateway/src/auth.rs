//! The gateway's side of identity: it refuses a call to a service that
//! needs a token early, with a proper 401 and challenge, and forwards the
//! token unchanged (the service checks it again and decides). With the
//! development issuer in effect it also serves its keys and hands out
//! tokens to anyone who asks, for the one-command mode.

use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use ordermesh_identity::{DevIssuer, Verifier, bearer_from_headers};
use serde::Deserialize;

use crate::error::GatewayError;

/// Who issues tokens, as the gateway needs to know.
pub struct Identity {
    pub verifier: Verifier,
    /// Present when the development issuer is in effect.
    pub dev_issuer: Option<DevIssuer>,
}

/// How long a development token lasts.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(3600);

impl Identity {
    /// Refuses a request without a valid bearer token.
    /// The verified token's subject.
    pub async fn check(&self, headers: &HeaderMap) -> Result<String, GatewayError> {
        let token = bearer_from_headers(headers).map_err(GatewayError::Unauthenticated)?;
        self.verifier
            .verify(token)
            .await
            .map(|identity| identity.subject)
            .map_err(GatewayError::Unauthenticated)
    }

    /// `GET /.well-known/jwks.json`: the development issuer's keys.
    pub fn jwks(&self) -> Response {
        match &self.dev_issuer {
            Some(issuer) => Json(issuer.jwks().clone()).into_response(),
            None => GatewayError::NotFound("GET /.well-known/jwks.json".into()).into_response(),
        }
    }

    /// `POST /v1/dev/token` `{"customerId": "alice", "scope": "orders:admin"}`.
    pub fn dev_token(&self, content_type: Option<&str>, body: &[u8]) -> Response {
        let Some(issuer) = &self.dev_issuer else {
            return GatewayError::NotFound("POST /v1/dev/token".into()).into_response();
        };
        let answer = || -> Result<Response, GatewayError> {
            crate::transcode::require_json(content_type)?;
            let request: DevTokenRequest = serde_json::from_slice(body)
                .map_err(|e| GatewayError::BadRequest(format!("invalid request body: {e}")))?;
            let token = issuer
                .token_response(
                    &request.customer_id,
                    request.scope.as_deref(),
                    DEV_TOKEN_TTL,
                )
                .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
            Ok(Json(token).into_response())
        };
        answer().unwrap_or_else(IntoResponse::into_response)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DevTokenRequest {
    customer_id: String,
    #[serde(default)]
    scope: Option<String>,
}
