//! A JWKS (RFC 7517) read into verification keys, each bound to the one
//! algorithm its type allows: RSA to RS256 (2048 bits or more), EC P-256 to
//! ES256, OKP Ed25519 to EdDSA. Symmetric (`oct`) keys and keys for other
//! curves, uses or algorithms are skipped, so nothing in a key set can be
//! used as an HMAC secret. One unusable key does not spoil the others.

use std::collections::BTreeSet;

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use crate::token::Alg;

/// Largest key set read, from a file or the network.
pub(crate) const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// JWK members are unpadded base64url; some publishers pad anyway.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// RSA moduli accepted, in bits: NIST SP 800-131A's least, the `rsa`
/// crate's most (larger would fail at every verification instead of here).
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;
/// The `rsa` crate's largest public exponent.
const MAX_RSA_EXPONENT: u64 = (1 << 33) - 1;

#[derive(Clone, Debug)]
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Alg,
    pub(crate) key: DecodingKey,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
    /// How many keys in the document were skipped, for the logs.
    pub(crate) skipped: usize,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum KeySetError {
    #[error("not a JWKS (a JSON object with a \"keys\" array): {0}")]
    NotJwks(String),
    #[error("larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl KeySet {
    pub(crate) fn parse(json: &[u8]) -> Result<Self, KeySetError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(KeySetError::TooLarge);
        }
        let document: Document =
            serde_json::from_slice(json).map_err(|e| KeySetError::NotJwks(e.to_string()))?;
        let total = document.keys.len();
        let keys: Vec<Key> = document
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<RawJwk>(value).ok())
            .filter_map(|raw| usable(&raw))
            .collect();
        Ok(Self {
            skipped: total - keys.len(),
            keys,
        })
    }

    /// The key for a token: the one with its `kid` and algorithm; a token
    /// without `kid` only when exactly one key fits its algorithm.
    pub(crate) fn find(&self, kid: Option<&str>, alg: Alg) -> Option<&Key> {
        let mut fitting = self.keys.iter().filter(|k| k.alg == alg);
        match kid {
            Some(kid) => fitting.find(|k| k.kid.as_deref() == Some(kid)),
            None => match (fitting.next(), fitting.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            },
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key ids, to tell whether a refresh took a key away.
    pub(crate) fn kids(&self) -> BTreeSet<(Option<&str>, &'static str)> {
        self.keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.alg.name()))
            .collect()
    }
}

/// A JWK as a verification key, or `None` when it may not verify our tokens.
fn usable(raw: &RawJwk) -> Option<Key> {
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if let Some(ops) = &raw.key_ops
        && !ops.iter().any(|op| op == "verify")
    {
        return None;
    }
    let (alg, key) = match raw.kty.as_str() {
        "RSA" => (Alg::Rs256, rsa(raw)?),
        "EC" => (Alg::Es256, p256(raw)?),
        "OKP" => (Alg::EdDsa, ed25519(raw)?),
        _ => return None,
    };
    // A JWK's `alg`, when given, must be the one its type allows here;
    // RFC 9864's fully specified "Ed25519" is EdDSA with that curve.
    if let Some(declared) = raw.alg.as_deref()
        && declared != alg.name()
        && !(alg == Alg::EdDsa && declared == "Ed25519")
    {
        return None;
    }
    // Build the verifier once now, so a key the backend refuses is skipped
    // here and not met for the first time by a caller's token.
    (jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&alg.jwt(), &key)
        .ok()?;
    Some(Key {
        kid: raw.kid.clone(),
        alg,
        key,
    })
}

fn member(value: Option<&String>, len: Option<usize>) -> Option<Vec<u8>> {
    let bytes = B64URL.decode(value?).ok()?;
    match len {
        Some(len) if bytes.len() != len => None,
        _ => Some(bytes),
    }
}

fn rsa(raw: &RawJwk) -> Option<DecodingKey> {
    let n = member(raw.n.as_ref(), None)?;
    let e = member(raw.e.as_ref(), None)?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let first = *n.first()?;
    let bits = n.len() * 8 - first.leading_zeros() as usize;
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) || e.is_empty() || e.len() > 8 {
        return None;
    }
    let exponent = e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if exponent < 3 || exponent % 2 == 0 || exponent > MAX_RSA_EXPONENT {
        return None;
    }
    Some(DecodingKey::from_rsa_raw_components(n, e))
}

fn p256(raw: &RawJwk) -> Option<DecodingKey> {
    if raw.crv.as_deref() != Some("P-256") {
        return None;
    }
    let x = member(raw.x.as_ref(), Some(32))?;
    let y = member(raw.y.as_ref(), Some(32))?;
    // An uncompressed SEC1 point, as the ES256 verifier reads it.
    let mut point = Vec::with_capacity(65);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Some(DecodingKey::from_ec_der(&point))
}

fn ed25519(raw: &RawJwk) -> Option<DecodingKey> {
    if raw.crv.as_deref() != Some("Ed25519") {
        return None;
    }
    // Exactly 32 bytes: the backend slices the first 32 and would panic on
    // fewer.
    let x = member(raw.x.as_ref(), Some(32))?;
    Some(DecodingKey::from_ed_der(&x))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::tests::support::TestKey;

    fn parse(value: serde_json::Value) -> KeySet {
        KeySet::parse(value.to_string().as_bytes()).expect("a JWKS")
    }

    #[test]
    fn each_type_binds_its_algorithm() {
        let rsa = TestKey::rsa("r");
        let ec = TestKey::p256("e");
        let ed = TestKey::ed25519("d");
        let set = parse(json!({"keys": [rsa.jwk(), ec.jwk(), ed.jwk()]}));
        assert_eq!(set.len(), 3);
        assert!(set.find(Some("r"), Alg::Rs256).is_some());
        assert!(set.find(Some("e"), Alg::Es256).is_some());
        assert!(set.find(Some("d"), Alg::EdDsa).is_some());
        assert!(
            set.find(Some("r"), Alg::Es256).is_none(),
            "an RSA key never verifies ES256"
        );
        assert!(set.find(Some("d"), Alg::Rs256).is_none());
        assert!(
            set.find(None, Alg::EdDsa).is_some(),
            "one EdDSA key: no kid needed"
        );
    }

    #[test]
    fn no_kid_needs_a_single_candidate() {
        let set =
            parse(json!({"keys": [TestKey::ed25519("a").jwk(), TestKey::ed25519("b").jwk()]}));
        assert!(set.find(None, Alg::EdDsa).is_none());
    }

    #[test]
    fn unusable_keys_are_skipped_not_fatal() {
        let good = TestKey::ed25519("good").jwk();
        let mut wrong_alg = TestKey::rsa("rs512").jwk();
        wrong_alg["alg"] = json!("RS512");
        let mut enc = TestKey::ed25519("enc").jwk();
        enc["use"] = json!("enc");
        let mut short = TestKey::ed25519("short").jwk();
        short["x"] = json!("AAAA");
        let mut p384 = TestKey::p256("p384").jwk();
        p384["crv"] = json!("P-384");
        let set = parse(json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "e-even", "n": TestKey::rsa("x").jwk()["n"], "e": "AAI"},
            {"kty": "WAT"},
            "not an object",
            wrong_alg, enc, short, p384, good,
        ]}));
        assert_eq!(set.len(), 1);
        assert_eq!(set.skipped, 9);
        assert!(set.find(Some("good"), Alg::EdDsa).is_some());
    }

    #[test]
    fn not_a_jwks() {
        assert!(KeySet::parse(b"[]").is_err());
        assert!(KeySet::parse(b"{\"keys\": 1}").is_err());
        assert!(KeySet::parse(b"<html>").is_err());
        assert!(matches!(
            KeySet::parse(&vec![b' '; MAX_JWKS_BYTES + 1]),
            Err(KeySetError::TooLarge)
        ));
        assert_eq!(
            KeySet::parse(b"{\"keys\": []}").map(|s| s.len()).ok(),
            Some(0)
        );
    }
}
