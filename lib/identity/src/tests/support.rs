//! What the tests sign tokens with: keys of each allowed type, their JWKs,
//! and a token factory that can also forge (any header, any algorithm).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::jwk::EllipticCurve;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::claims::unix_secs;
use crate::clock::Clock;
use crate::jwks::JwksSource;
use crate::keyfile::PKCS8_ED25519_PREFIX;
use crate::verifier::{Verifier, VerifierConfig};

pub(crate) const ISSUER: &str = "https://idp.test/realms/shop";
pub(crate) const AUDIENCE: &str = "ordermesh";

pub(crate) struct TestKey {
    pub(crate) kid: String,
    pub(crate) alg: Algorithm,
    pub(crate) encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    /// The fixture RSA key (2048 bits): RS256.
    pub(crate) fn rsa(kid: &str) -> Self {
        let encoding = EncodingKey::from_rsa_pem(include_bytes!("../../testdata/rsa-a.pem"))
            .expect("the RSA fixture");
        let (n, e) = (DEFAULT_PROVIDER
            .key_utils
            .rsa_pub_components_from_private_key)(encoding.as_bytes())
        .expect("RSA public key");
        let jwk = json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e)});
        Self::new(kid, Algorithm::RS256, encoding, jwk)
    }

    /// The fixture P-256 key: ES256.
    pub(crate) fn p256(kid: &str) -> Self {
        let encoding = EncodingKey::from_ec_pem(include_bytes!("../../testdata/ec-a.pem"))
            .expect("the EC fixture");
        let (_, x, y) = (DEFAULT_PROVIDER
            .key_utils
            .ec_pub_components_from_private_key)(
            encoding.as_bytes(), Algorithm::ES256
        )
        .expect("EC public key");
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
        Self::new(kid, Algorithm::ES256, encoding, jwk)
    }

    /// A new Ed25519 key: EdDSA.
    pub(crate) fn ed25519(kid: &str) -> Self {
        let mut der = PKCS8_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&rand::random::<[u8; 32]>());
        let encoding = EncodingKey::from_ed_der(&der);
        let x = (DEFAULT_PROVIDER
            .key_utils
            .ed_pub_components_from_private_key)(&der, &EllipticCurve::Ed25519)
        .expect("Ed25519 public key");
        let jwk =
            json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": URL_SAFE_NO_PAD.encode(x)});
        Self::new(kid, Algorithm::EdDSA, encoding, jwk)
    }

    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey, jwk: Value) -> Self {
        Self {
            kid: kid.into(),
            alg,
            encoding,
            jwk,
        }
    }

    pub(crate) fn jwk(&self) -> Value {
        self.jwk.clone()
    }

    /// A token with these claims, signed as a real issuer would.
    pub(crate) fn token(&self, claims: &Value) -> String {
        let header = json!({"alg": alg_name(self.alg), "typ": "JWT", "kid": self.kid});
        sign(self.alg, &self.encoding, &header, claims)
    }
}

/// Good claims for [`ISSUER`] and [`AUDIENCE`], valid for ten minutes.
pub(crate) fn claims(customer: &str) -> Value {
    let now = unix_secs(std::time::SystemTime::now());
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": customer, "iat": now, "exp": now + 600})
}

pub(crate) fn jwks(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()})
}

/// Any header, signed with `alg` and `key`, whatever the header says.
pub(crate) fn sign(alg: Algorithm, key: &EncodingKey, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signer = (DEFAULT_PROVIDER.signer_factory)(&alg, key).expect("a signer");
    let signature = signer.try_sign(input.as_bytes()).expect("signed");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

pub(crate) fn alg_name(alg: Algorithm) -> String {
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub(crate) fn config() -> VerifierConfig {
    VerifierConfig::new(ISSUER, AUDIENCE)
}

/// A verifier trusting these keys, and the clock it reads.
pub(crate) fn verifier(keys: &[&TestKey]) -> (Verifier, Clock) {
    verifier_with(config(), keys)
}

pub(crate) fn verifier_with(config: VerifierConfig, keys: &[&TestKey]) -> (Verifier, Clock) {
    let clock = Clock::default();
    let source = JwksSource::Json(jwks(keys).to_string());
    let verifier = Verifier::with_clock(config, source, clock.clone()).expect("a verifier");
    (verifier, clock)
}
