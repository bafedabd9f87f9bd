//! The development issuer: with no issuer configured, the one-command mode
//! signs its own tokens, with an Ed25519 key kept in the data dir, so the
//! identity path is the same in development as in production: the order
//! service never trusts a customer id it did not read from a signed token.
//!
//! Its JWKS is served by the gateway (`GET /.well-known/jwks.json`) and
//! written beside the key, so a single-role process can be pointed at it
//! with `--jwks-file DATA_DIR/dev-issuer-jwks.json --jwt-issuer ordermesh-dev`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::jwk::EllipticCurve;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::claims::unix_secs;
use crate::keyfile;

/// The `iss` of the development issuer's tokens.
pub const DEV_ISSUER: &str = "ordermesh-dev";
/// The `aud` of its tokens unless told otherwise (`--jwt-audience`'s default).
pub const DEV_AUDIENCE: &str = "ordermesh";
/// Its private key, in the data dir (mode 0600).
pub const DEV_KEY_FILE: &str = "dev-issuer-key.pem";
/// Its public JWKS, in the data dir.
pub const DEV_JWKS_FILE: &str = "dev-issuer-jwks.json";
/// Longest lifetime of a development token.
pub const DEV_TOKEN_MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Why the development issuer could not start or issue a token.
#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} may be read by others (mode {mode:o}): `chmod 600` it, or delete it to make a new key"
    )]
    LoosePermissions { path: PathBuf, mode: u32 },
    #[error("{path}: {reason} (an Ed25519 private key in PKCS#8 PEM is expected)")]
    BadKey { path: PathBuf, reason: &'static str },
    #[error("generating a key: {0}")]
    Random(String),
    /// A token request the issuer refuses (answer 400 with this text).
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("signing a token: {0}")]
    Signing(String),
}

/// The token endpoint's answer: `{"accessToken","tokenType":"Bearer","expiresIn"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    /// Seconds.
    pub expires_in: u64,
}

/// Issues development tokens. Cheap to clone.
#[derive(Clone)]
pub struct DevIssuer {
    key: Arc<EncodingKey>,
    kid: Arc<str>,
    jwks: Arc<serde_json::Value>,
    key_path: Arc<Path>,
    jwks_path: Arc<Path>,
    audience: Arc<str>,
    customer_claim: Arc<str>,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer")
            .field("kid", &self.kid)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// The issuer whose key is in `data_dir` (made there on first start,
    /// mode 0600; a key file others may read is refused); writes its JWKS
    /// beside it.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, DevIssuerError> {
        std::fs::create_dir_all(data_dir).map_err(|source| DevIssuerError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        let key_path = data_dir.join(DEV_KEY_FILE);
        let der = keyfile::load_or_create(&key_path)?;
        let public = (DEFAULT_PROVIDER
            .key_utils
            .ed_pub_components_from_private_key)(&der, &EllipticCurve::Ed25519)
        .map_err(|_| DevIssuerError::BadKey {
            path: key_path.clone(),
            reason: "no Ed25519 public key",
        })?;
        let x = URL_SAFE_NO_PAD.encode(public);
        let kid = thumbprint(&x);
        let jwks = json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": x,
            "kid": kid, "alg": "EdDSA", "use": "sig",
        }]});
        let jwks_path = data_dir.join(DEV_JWKS_FILE);
        let mut text = serde_json::to_string_pretty(&jwks).unwrap_or_default();
        text.push('\n');
        keyfile::replace(&jwks_path, text.as_bytes(), 0o644)?;
        Ok(Self {
            key: Arc::new(EncodingKey::from_ed_der(&der)),
            kid: kid.into(),
            jwks: Arc::new(jwks),
            key_path: key_path.into(),
            jwks_path: jwks_path.into(),
            audience: DEV_AUDIENCE.into(),
            customer_claim: "sub".into(),
        })
    }

    /// Tokens for another audience (the verifier's `--jwt-audience`).
    pub fn with_audience(mut self, audience: &str) -> Self {
        self.audience = audience.into();
        self
    }

    /// Tokens that also carry the customer in this claim (the verifier's
    /// `--customer-claim`), besides `sub`.
    pub fn with_customer_claim(mut self, claim: &str) -> Self {
        self.customer_claim = claim.into();
        self
    }

    /// [`DEV_ISSUER`].
    pub fn issuer(&self) -> &'static str {
        DEV_ISSUER
    }

    /// The audience its tokens carry.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Its key's id: the key's RFC 7638 thumbprint.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Its JWKS, to serve at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    /// Its JWKS as JSON text.
    pub fn jwks_json(&self) -> String {
        self.jwks.to_string()
    }

    /// Where its private key is.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// Where its JWKS was written, for `--jwks-file`.
    pub fn jwks_path(&self) -> &Path {
        &self.jwks_path
    }

    /// A token for a customer, with an optional `scope` (`orders:admin`
    /// makes an administrator), valid for `ttl` (1 s to a day).
    pub fn issue(
        &self,
        customer_id: &str,
        scope: Option<&str>,
        ttl: Duration,
    ) -> Result<String, DevIssuerError> {
        check_request(customer_id, scope, ttl)?;
        let now = unix_secs(SystemTime::now());
        let mut claims = json!({
            "iss": DEV_ISSUER,
            "aud": &*self.audience,
            "sub": customer_id,
            "iat": now,
            "nbf": now,
            "exp": now + ttl.as_secs(),
        });
        if let Some(scope) = scope.filter(|s| !s.is_empty()) {
            claims["scope"] = json!(scope);
        }
        // Never over a registered claim, whatever the setting says.
        if claims.get(&*self.customer_claim).is_none() {
            claims[&*self.customer_claim] = json!(customer_id);
        }
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": &*self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        // Ed25519 only: nothing in this crate signs with RSA.
        let signer = (DEFAULT_PROVIDER.signer_factory)(&Algorithm::EdDSA, &self.key)
            .map_err(|e| DevIssuerError::Signing(e.to_string()))?;
        let signature = signer
            .try_sign(signing_input.as_bytes())
            .map_err(|e| DevIssuerError::Signing(e.to_string()))?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// [`DevIssuer::issue`] as the token endpoint answers it.
    pub fn token_response(
        &self,
        customer_id: &str,
        scope: Option<&str>,
        ttl: Duration,
    ) -> Result<TokenResponse, DevIssuerError> {
        Ok(TokenResponse {
            access_token: self.issue(customer_id, scope, ttl)?,
            token_type: "Bearer".into(),
            expires_in: ttl.as_secs(),
        })
    }
}

fn check_request(
    customer_id: &str,
    scope: Option<&str>,
    ttl: Duration,
) -> Result<(), DevIssuerError> {
    let invalid = DevIssuerError::InvalidRequest;
    if customer_id.is_empty() || customer_id.len() > 128 {
        return Err(invalid("the customer id must be 1 to 128 bytes"));
    }
    if customer_id.chars().any(char::is_control) {
        return Err(invalid("the customer id has control characters"));
    }
    // RFC 6749 §3.3: scope words are %x21 / %x23-5B / %x5D-7E, by spaces.
    let scope_ok = |s: &str| {
        s.len() <= 512
            && s.bytes()
                .all(|b| b == b' ' || ((b'!'..=b'~').contains(&b) && b != b'"' && b != b'\\'))
    };
    if scope.is_some_and(|s| !scope_ok(s)) {
        return Err(invalid(
            "the scope must be printable ASCII words (no quotes or backslashes), at most 512 bytes",
        ));
    }
    if ttl < Duration::from_secs(1) || ttl > DEV_TOKEN_MAX_TTL {
        return Err(invalid(
            "the lifetime must be between 1 second and 24 hours",
        ));
    }
    Ok(())
}

/// RFC 7638 thumbprint of an Ed25519 JWK: SHA-256 of its required members
/// in lexicographic order, base64url.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_8037() {
        // RFC 8037 appendix A.3.
        assert_eq!(
            thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn requests_are_checked() {
        let day = Duration::from_secs(3600);
        assert!(check_request("c-1", Some("orders:admin openid"), day).is_ok());
        assert!(check_request("", None, day).is_err());
        assert!(check_request(&"x".repeat(129), None, day).is_err());
        assert!(check_request("c\n1", None, day).is_err());
        assert!(check_request("c-1", Some("a\"b"), day).is_err());
        assert!(check_request("c-1", None, Duration::ZERO).is_err());
        assert!(check_request("c-1", None, DEV_TOKEN_MAX_TTL + Duration::from_secs(1)).is_err());
    }
}
