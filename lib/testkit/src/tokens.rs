//! Tokens for tests: a test issuer whose keys every `TestApp` (and every
//! `ordermesh` process a test starts, through the environment) trusts, and
//! a signer that can also forge (any header, any algorithm, any claims), so
//! tests can prove each bad token is refused.
//!
//! The keys are the identity crate's fixtures (`lib/identity/testdata`),
//! for tests only.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::{Algorithm, EncodingKey};
use ordermesh_identity::IdentitySettings;
use serde_json::{Value, json};

/// The test issuer's `iss`.
pub const ISSUER: &str = "https://issuer.test/realms/ordermesh";
/// The audience every ordermesh verifier expects by default.
pub const AUDIENCE: &str = "ordermesh";
/// The kid of the test issuer's RSA key (RS256).
pub const RSA_KID: &str = "test-rsa";
/// The kid of its P-256 key (ES256), not in the default JWKS: for rotation.
pub const EC_KID: &str = "test-ec";

const RSA_PEM: &[u8] = include_bytes!("../../identity/testdata/rsa-a.pem");
const EC_PEM: &[u8] = include_bytes!("../../identity/testdata/ec-a.pem");

/// A signing key of the test issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Rsa,
    Ec,
}

impl Key {
    fn alg(self) -> Algorithm {
        match self {
            Key::Rsa => Algorithm::RS256,
            Key::Ec => Algorithm::ES256,
        }
    }

    fn kid(self) -> &'static str {
        match self {
            Key::Rsa => RSA_KID,
            Key::Ec => EC_KID,
        }
    }

    fn encoding(self) -> EncodingKey {
        match self {
            Key::Rsa => EncodingKey::from_rsa_pem(RSA_PEM),
            Key::Ec => EncodingKey::from_ec_pem(EC_PEM),
        }
        .unwrap_or_else(|e| panic!("the identity crate's fixture key: {e}"))
    }

    /// The key's public JWK, as an issuer publishes it.
    pub fn jwk(self) -> Value {
        let encoding = self.encoding();
        match self {
            Key::Rsa => {
                let (n, e) = (DEFAULT_PROVIDER
                    .key_utils
                    .rsa_pub_components_from_private_key)(
                    encoding.as_bytes()
                )
                .expect("an RSA public key");
                json!({"kty": "RSA", "kid": RSA_KID, "alg": "RS256", "use": "sig",
                    "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e)})
            }
            Key::Ec => {
                let (_, x, y) = (DEFAULT_PROVIDER
                    .key_utils
                    .ec_pub_components_from_private_key)(
                    encoding.as_bytes(), Algorithm::ES256
                )
                .expect("an EC public key");
                json!({"kty": "EC", "crv": "P-256", "kid": EC_KID, "alg": "ES256", "use": "sig",
                    "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)})
            }
        }
    }
}

/// A JWKS holding `keys`.
pub fn jwks(keys: &[Key]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

/// The test issuer's JWKS file (its RSA key), written once per process.
pub fn jwks_file() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        // Kept for the whole test process: every App started reads it.
        let dir = tempfile::tempdir().expect("a temporary directory").keep();
        let path = dir.join("test-issuer-jwks.json");
        std::fs::write(&path, jwks(&[Key::Rsa]).to_string()).expect("write the test JWKS");
        path
    })
}

/// Identity settings that trust the test issuer.
pub fn settings() -> IdentitySettings {
    IdentitySettings {
        jwks_file: Some(jwks_file().to_owned()),
        jwt_issuer: Some(ISSUER.to_owned()),
        dev_issuer: false,
        ..IdentitySettings::default()
    }
}

/// The environment that makes an `ordermesh` process trust the test issuer.
pub fn env() -> [(&'static str, String); 3] {
    [
        ("ORDERMESH_JWKS_FILE", jwks_file().display().to_string()),
        ("ORDERMESH_JWT_ISSUER", ISSUER.to_owned()),
        ("ORDERMESH_DEV_ISSUER", "false".to_owned()),
    ]
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Good claims for `customer`, valid for ten minutes.
pub fn claims(customer: &str) -> Value {
    let now = now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": customer, "iat": now, "nbf": now, "exp": now + 600})
}

/// A customer's token, as the test issuer signs it.
pub fn customer(customer: &str) -> String {
    sign(Key::Rsa, &claims(customer))
}

/// An operator's token (`scope: orders:admin`) for `subject`.
pub fn admin(subject: &str) -> String {
    let mut claims = claims(subject);
    claims["scope"] = json!("orders:read orders:admin");
    sign(Key::Rsa, &claims)
}

/// `claims` signed with `key`, with the header an issuer writes.
pub fn sign(key: Key, claims: &Value) -> String {
    let header = json!({"alg": alg_name(key.alg()), "typ": "JWT", "kid": key.kid()});
    sign_raw(key.alg(), &key.encoding(), &header, claims)
}

/// Any header, signed with `alg` and `key`, whatever the header says: the
/// forger's tool.
pub fn sign_raw(alg: Algorithm, key: &EncodingKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signer = (DEFAULT_PROVIDER.signer_factory)(&alg, key).expect("a signer");
    let signature = signer.try_sign(input.as_bytes()).expect("signed");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A token with `alg: none` and no signature.
pub fn unsigned(claims: &Value) -> String {
    let header = json!({"alg": "none", "typ": "JWT"});
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// The classic confusion: HS256 "signed" with the RSA key's public JWK as
/// the HMAC secret, naming that key.
pub fn hmac_with_public_key(claims: &Value) -> String {
    let secret = Key::Rsa.jwk().to_string();
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": RSA_KID});
    sign_raw(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret.as_bytes()).expect("an HMAC key"),
        &header,
        claims,
    )
}

/// A token whose signature is of other content (the payload swapped).
pub fn forged(customer: &str) -> String {
    let genuine = self::customer("someone-else");
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let payload = URL_SAFE_NO_PAD.encode(claims(customer).to_string());
    parts[1] = &payload;
    parts.join(".")
}

fn alg_name(alg: Algorithm) -> String {
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// `Bearer TOKEN`, an `authorization` header's value.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_test_issuers_tokens_verify_and_forgeries_do_not() {
        let (verifier, _) =
            ordermesh_identity::from_settings(&settings(), Path::new("/nonexistent")).unwrap();
        let alice = verifier.verify(&customer("alice")).await.unwrap();
        assert_eq!(alice.customer_id, "alice");
        assert!(!alice.admin);
        assert!(verifier.verify(&admin("ops")).await.unwrap().admin);
        for bad in [
            forged("alice"),
            unsigned(&claims("alice")),
            hmac_with_public_key(&claims("alice")),
            sign(Key::Ec, &claims("alice")),
        ] {
            assert!(verifier.verify(&bad).await.is_err(), "{bad}");
        }
    }
}
