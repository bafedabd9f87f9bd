//! A compact JWS taken apart, and its header read, before any key is chosen.
//!
//! The header's `alg` is checked against the allow-list here, first: `none`,
//! the HMAC family and everything else are refused before a key is looked up,
//! so a public key can never be used as an HMAC secret. Keys come from the
//! configured JWKS only: `jku`, `x5u` and `jwk` in a header are ignored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::error::AuthError;

/// Longest token read: real access tokens are 1–2 KiB; the bound keeps
/// hashing and base64 work small for hostile input.
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The algorithms accepted: asymmetric only, one per key type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    fn from_header(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

/// The three parts of a compact JWS, still encoded.
#[derive(Debug)]
pub(crate) struct Parts<'a> {
    pub(crate) header: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) signature: &'a str,
    /// `header.payload`, the bytes the signature covers.
    pub(crate) signing_input: &'a str,
}

/// What the verifier reads from the header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) alg: Alg,
    pub(crate) kid: Option<String>,
}

pub(crate) fn split(token: &str) -> Result<Parts<'_>, AuthError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(AuthError::Malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("not three dot-separated parts"));
    };
    // An empty signature (`alg: none`) passes here, so that the header's
    // algorithm is what refuses it.
    if header.is_empty() || payload.is_empty() {
        return Err(AuthError::Malformed("an empty part"));
    }
    let signing_input = &token[..header.len() + 1 + payload.len()];
    Ok(Parts {
        header,
        payload,
        signature,
        signing_input,
    })
}

pub(crate) fn decode_part(part: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed("not base64url"))
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<serde_json::Value>,
}

pub(crate) fn parse_header(encoded: &str) -> Result<Header, AuthError> {
    let bytes = decode_part(encoded)?;
    let raw: RawHeader = serde_json::from_slice(&bytes)
        .map_err(|_| AuthError::Malformed("header is not a JSON object"))?;
    let alg = raw.alg.ok_or(AuthError::Malformed("header without alg"))?;
    let alg = Alg::from_header(&alg).ok_or_else(|| AuthError::algorithm_not_allowed(&alg))?;
    // RFC 7515 §4.1.11: extensions we do not understand make the token invalid.
    if raw.crit.is_some() {
        return Err(AuthError::Malformed("critical header extensions"));
    }
    // Explicit typing (RFC 8725 §3.11): refuse other kinds of JWT, e.g. a
    // logout or DPoP token signed by the same issuer.
    if let Some(typ) = raw.typ {
        let typ = typ.to_ascii_lowercase();
        let typ = typ.strip_prefix("application/").unwrap_or(&typ);
        if typ != "jwt" && typ != "at+jwt" {
            return Err(AuthError::Malformed("header typ is not a JWT access token"));
        }
    }
    Ok(Header { alg, kid: raw.kid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(json: &str) -> Result<Header, AuthError> {
        parse_header(&URL_SAFE_NO_PAD.encode(json))
    }

    #[test]
    fn splits_three_parts() {
        let parts = split("aaa.bbb.ccc").expect("three parts");
        assert_eq!(parts.header, "aaa");
        assert_eq!(parts.payload, "bbb");
        assert_eq!(parts.signature, "ccc");
        assert_eq!(parts.signing_input, "aaa.bbb");
        assert!(split("aaa.bbb").is_err());
        assert!(split("aaa.bbb.ccc.ddd").is_err());
        assert!(split(".bbb.ccc").is_err());
        assert_eq!(split("aaa.bbb.").map(|p| p.signature).ok(), Some(""));
        assert!(split(&"a".repeat(MAX_TOKEN_LEN + 1)).is_err());
    }

    #[test]
    fn allowed_algorithms() {
        assert_eq!(
            header(r#"{"alg":"EdDSA","kid":"k"}"#),
            Ok(Header {
                alg: Alg::EdDsa,
                kid: Some("k".into())
            })
        );
        assert_eq!(header(r#"{"alg":"RS256"}"#).map(|h| h.alg), Ok(Alg::Rs256));
        assert_eq!(
            header(r#"{"alg":"ES256","typ":"at+jwt"}"#).map(|h| h.alg),
            Ok(Alg::Es256)
        );
    }

    #[test]
    fn refused_algorithms() {
        for alg in [
            "none", "None", "HS256", "HS512", "RS512", "PS256", "ES384", "rs256", "",
        ] {
            let json = format!(r#"{{"alg":"{alg}","kid":"k"}}"#);
            assert!(
                matches!(header(&json), Err(AuthError::AlgorithmNotAllowed(_))),
                "{alg} was not refused"
            );
        }
        assert!(matches!(
            header(r#"{"alg":5}"#),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(header(r#"{}"#), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn other_headers() {
        assert!(header(r#"{"alg":"EdDSA","crit":["exp"]}"#).is_err());
        assert!(header(r#"{"alg":"EdDSA","typ":"dpop+jwt"}"#).is_err());
        assert!(header(r#"{"alg":"EdDSA","typ":"application/at+jwt"}"#).is_ok());
        assert!(
            header(r#"{"alg":"EdDSA","alg":"none"}"#).is_err(),
            "duplicate alg"
        );
        assert!(header("[1]").is_err());
        assert!(parse_header("!!!").is_err());
    }
}
