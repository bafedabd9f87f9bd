//! Why a caller was refused, in one enum read by every mapping: RFC 6750's
//! `error` code, the HTTP status and a description safe to show the caller.
//! The `Display` text is for logs and may say more.

use http::StatusCode;

/// The `realm` every `WWW-Authenticate` challenge names.
pub const REALM: &str = "ordermesh";

/// What was wrong with the caller's credentials, or why they could not be
/// checked ([`AuthError::JwksUnavailable`]: answer UNAVAILABLE/503, not 401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no bearer token")]
    Missing,
    /// An `Authorization` header with another scheme (`Basic ...`).
    #[error("the authorization header uses another scheme than Bearer")]
    WrongScheme,
    /// An `Authorization` header that is not `Bearer <token>`.
    #[error("malformed authorization header")]
    MalformedHeader,
    /// The token is not a JWT we can read.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The signature does not match the key named by the token.
    #[error("bad signature")]
    BadSignature,
    /// `exp`, plus the leeway, has passed.
    #[error("token expired")]
    Expired,
    /// `nbf`, less the leeway, has not come yet.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not name the configured audience.
    #[error("wrong audience")]
    WrongAudience,
    /// No key in the JWKS has the token's `kid` and fits its algorithm.
    #[error("unknown signing key")]
    UnknownKey,
    /// The header's `alg` is not RS256, ES256 or EdDSA (the value is kept
    /// escaped and cut short, for logs).
    #[error("algorithm {0} not allowed")]
    AlgorithmNotAllowed(String),
    /// A required claim is absent or not of the right type.
    #[error("missing claim {0}")]
    MissingClaim(String),
    /// The key set could not be loaded (the cause, for logs).
    #[error("signing keys unavailable: {0}")]
    JwksUnavailable(String),
}

impl AuthError {
    /// RFC 6750's `error` code: `invalid_request` for a malformed header,
    /// `invalid_token` for a bad token, none where RFC 6750 §3.1 wants none
    /// (no credentials, another scheme) or the fault is ours (keys unavailable).
    pub fn error_code(&self) -> Option<&'static str> {
        match self {
            Self::Missing | Self::WrongScheme | Self::JwksUnavailable(_) => None,
            Self::MalformedHeader => Some("invalid_request"),
            _ => Some("invalid_token"),
        }
    }

    /// A short description that is safe to show the caller: it never echoes
    /// the token or says more than which rule it broke.
    pub fn description(&self) -> &'static str {
        match self {
            Self::Missing => "a bearer token is required",
            Self::WrongScheme => "use the Bearer authorization scheme",
            Self::MalformedHeader => "the authorization header must be 'Bearer <token>'",
            Self::Malformed(_) => "the token is malformed",
            Self::BadSignature => "the token's signature is invalid",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::WrongIssuer => "the token is from another issuer",
            Self::WrongAudience => "the token is for another audience",
            Self::UnknownKey => "the token is signed with an unknown key",
            Self::AlgorithmNotAllowed(_) => "the token's algorithm is not allowed",
            Self::MissingClaim(_) => "the token lacks a required claim",
            Self::JwksUnavailable(_) => "the signing keys are unavailable, try again later",
        }
    }

    /// True when the token could not be checked, through no fault of the
    /// caller's: answer UNAVAILABLE (gRPC) or 503 (HTTP), and retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::JwksUnavailable(_))
    }

    /// The HTTP status an edge answers with (RFC 6750 §3.1).
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::MalformedHeader => StatusCode::BAD_REQUEST,
            Self::JwksUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The `WWW-Authenticate` challenge to send with a 401 or 400, e.g.
    /// `Bearer realm="ordermesh", error="invalid_token", error_description="..."`;
    /// none for [`AuthError::JwksUnavailable`].
    pub fn www_authenticate(&self) -> Option<String> {
        if self.is_unavailable() {
            return None;
        }
        Some(match self.error_code() {
            None => format!("Bearer realm=\"{REALM}\""),
            // Descriptions are fixed ASCII without quotes, so no escaping.
            Some(code) => format!(
                "Bearer realm=\"{REALM}\", error=\"{code}\", error_description=\"{}\"",
                self.description()
            ),
        })
    }

    /// An [`AuthError::AlgorithmNotAllowed`] for a header value, cut short
    /// and escaped so a hostile header cannot flood or forge log lines.
    pub(crate) fn algorithm_not_allowed(alg: &str) -> Self {
        let short: String = alg.chars().take(16).collect();
        Self::AlgorithmNotAllowed(format!("{short:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_rfc_6750() {
        assert_eq!(AuthError::Missing.error_code(), None);
        assert_eq!(AuthError::WrongScheme.error_code(), None);
        assert_eq!(
            AuthError::MalformedHeader.error_code(),
            Some("invalid_request")
        );
        assert_eq!(AuthError::Expired.error_code(), Some("invalid_token"));
        assert_eq!(
            AuthError::algorithm_not_allowed("none").error_code(),
            Some("invalid_token")
        );
        assert_eq!(
            AuthError::MalformedHeader.http_status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            AuthError::BadSignature.http_status(),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn unavailable_is_told_apart() {
        let error = AuthError::JwksUnavailable("connection refused".into());
        assert!(error.is_unavailable());
        assert_eq!(error.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.error_code(), None);
        assert_eq!(error.www_authenticate(), None);
        assert!(!AuthError::UnknownKey.is_unavailable());
    }

    #[test]
    fn challenges() {
        assert_eq!(
            AuthError::Missing.www_authenticate().as_deref(),
            Some("Bearer realm=\"ordermesh\"")
        );
        assert_eq!(
            AuthError::Expired.www_authenticate().as_deref(),
            Some(
                "Bearer realm=\"ordermesh\", error=\"invalid_token\", error_description=\"the token has expired\""
            )
        );
    }

    #[test]
    fn hostile_algorithm_names_are_cut_and_escaped() {
        let error =
            AuthError::algorithm_not_allowed("none\"\n\u{1b}[31mXXXXXXXXXXXXXXXXXXXXXXXXXXXXX");
        let AuthError::AlgorithmNotAllowed(shown) = &error else {
            panic!("not AlgorithmNotAllowed: {error:?}");
        };
        assert!(!shown.contains('\n') && !shown.contains('\u{1b}'));
        assert!(shown.len() < 40, "{shown}");
        // The caller sees a fixed sentence, never the header's text.
        assert!(!error.description().contains("none"));
    }
}
