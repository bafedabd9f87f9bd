//! Who is calling: every path into the order service carries the caller's
//! bearer JWT, and this crate is the one verifier of it. The gateway uses it
//! to refuse early (401 with a `WWW-Authenticate` challenge), the order
//! service to decide.
//!
//! ```no_run
//! # async fn example(settings: ordermesh_identity::IdentitySettings, headers: http::HeaderMap) -> anyhow::Result<()> {
//! let (verifier, dev_issuer) = ordermesh_identity::from_settings(&settings, "data".as_ref())?;
//! match verifier.verify_authorization(headers.get("authorization").map(|v| v.as_bytes())).await {
//!     Ok(identity) => println!("customer {}", identity.customer_id),
//!     Err(refused) if refused.is_unavailable() => { /* 503 / UNAVAILABLE, retry */ }
//!     Err(refused) => { /* refused.http_status(), refused.www_authenticate() */ }
//! }
//! # Ok(()) }
//! ```
//!
//! [`Verifier::verify`] is async (an unknown `kid` may mean a fetch), so in
//! tonic it belongs in an async tower layer or the handler, not in a (sync)
//! `Interceptor`; a repeated token costs a SHA-256 and a map lookup. Call
//! [`Verifier::refresh_keys`] at start to load a URL's or file's keys early
//! and log a bad configuration before the first customer meets it.
//!
//! # Why this is safe
//!
//! - Only RS256, ES256 and EdDSA are accepted, and the header's `alg` is
//!   checked against that list before a key is chosen: `none` and every HMAC
//!   algorithm are refused outright, so a public key can never serve as an
//!   HMAC secret. A key is used only for the one algorithm its type allows
//!   (RSA of 2048 bits or more: RS256; EC P-256: ES256; OKP Ed25519: EdDSA),
//!   and symmetric keys in a JWKS are skipped. Keys come from the configured
//!   JWKS only, never from a token's `jku`, `x5u` or `jwk` header.
//! - Signatures are checked by [`jsonwebtoken`] 12 with its RustCrypto
//!   backend (pure Rust: `rsa`, `p256`, `ed25519-dalek`), called directly
//!   rather than through jsonwebtoken's process-wide provider, which panics
//!   when both of its backends are compiled in. The claims (`iss`, `aud`,
//!   `exp`, `nbf`, `sub`) are then checked here with strict types.
//! - RUSTSEC-2023-0071 (Marvin, in the `rsa` crate) is a timing side channel
//!   in RSA *decryption and signing* with a private key. This crate only
//!   *verifies* RS256 with issuers' public keys, where there is no secret to
//!   leak; it never loads an RSA private key and never signs with RSA: the
//!   development issuer signs with Ed25519.
//! - JWKS over HTTPS uses rustls (ring), no OpenSSL; plain HTTP is allowed
//!   to loopback hosts only.

mod bearer;
mod cache;
mod claims;
mod clock;
mod dev_issuer;
mod error;
mod identity;
mod jwks;
mod keyfile;
mod settings;
mod token;
mod verifier;

#[cfg(test)]
mod tests;

use std::path::Path;

use anyhow::Context;

pub use bearer::{bearer_from_headers, parse_bearer};
pub use cache::DEFAULT_TOKEN_CACHE_CAPACITY;
pub use dev_issuer::{
    DEV_AUDIENCE, DEV_ISSUER, DEV_JWKS_FILE, DEV_KEY_FILE, DEV_TOKEN_MAX_TTL, DevIssuer,
    DevIssuerError, TokenResponse,
};
pub use error::{AuthError, REALM};
pub use identity::{ADMIN_SCOPE, Identity};
pub use jwks::{JwksOptions, JwksSource};
pub use settings::IdentitySettings;
pub use verifier::{Verifier, VerifierConfig};

/// The verifier every role uses and, when it is in effect, the development
/// issuer (which the gateway serves). No global state: building it twice in
/// one process, on one data dir or two, gives verifiers that agree.
pub fn from_settings(
    settings: &IdentitySettings,
    data_dir: &Path,
) -> anyhow::Result<(Verifier, Option<DevIssuer>)> {
    settings.check()?;
    let mut config = VerifierConfig::new(
        settings
            .jwt_issuer
            .clone()
            .unwrap_or_else(|| DEV_ISSUER.into()),
        settings.jwt_audience.clone(),
    );
    config.customer_claim = settings.customer_claim.clone();
    config.leeway = settings.jwt_leeway;
    if settings.dev_issuer_in_effect() {
        let issuer = DevIssuer::load_or_create(data_dir)
            .context("starting the development issuer")?
            .with_audience(&settings.jwt_audience)
            .with_customer_claim(&settings.customer_claim);
        tracing::warn!(
            key = %issuer.key_path().display(),
            jwks = %issuer.jwks_path().display(),
            "the development issuer is in effect: its tokens are anyone's for the asking; \
             configure --jwt-issuer and --jwks-url for production"
        );
        let verifier = Verifier::new(config, JwksSource::Json(issuer.jwks_json()))?;
        return Ok((verifier, Some(issuer)));
    }
    let source = match (&settings.jwks_url, &settings.jwks_file) {
        (Some(url), _) => JwksSource::Url {
            url: url.clone(),
            ca_pem: match &settings.jwks_ca_file {
                Some(path) => Some(
                    std::fs::read(path)
                        .with_context(|| format!("reading --jwks-ca-file {}", path.display()))?,
                ),
                None => None,
            },
        },
        (None, Some(path)) => JwksSource::File(path.clone()),
        // `check` made sure one of them is there.
        (None, None) => anyhow::bail!("no JWKS configured"),
    };
    Ok((Verifier::new(config, source)?, None))
}
