//! The one token verifier every role uses: the gateway to refuse early with
//! a proper 401, the order service to decide.
//!
//! The order of the checks matters: the header's algorithm against the
//! allow-list, then the key (by `kid`, and fitting that algorithm), then the
//! signature, and only then the claims, so nothing is read from an unsigned
//! payload.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::ensure;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;

use crate::bearer::parse_bearer;
use crate::cache::{self, DEFAULT_TOKEN_CACHE_CAPACITY, TokenCache};
use crate::claims::{self, Policy};
use crate::clock::Clock;
use crate::error::AuthError;
use crate::identity::Identity;
use crate::jwks::{JwksOptions, JwksSource, KeyStore};
use crate::token::{self, Alg, Parts};

/// What a verifier accepts.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// The `iss` tokens must carry, exactly.
    pub issuer: String,
    /// A value `aud` must be or contain.
    pub audience: String,
    /// The claim holding the shop's customer id.
    pub customer_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Verified tokens remembered (0: none).
    pub cache_capacity: usize,
    pub jwks: JwksOptions,
}

impl VerifierConfig {
    /// The production defaults for an issuer and audience: the customer in
    /// `sub`, 30 s of leeway, 10,000 cached tokens.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            customer_claim: "sub".into(),
            leeway: Duration::from_secs(30),
            cache_capacity: DEFAULT_TOKEN_CACHE_CAPACITY,
            jwks: JwksOptions::default(),
        }
    }
}

/// Verifies bearer JWTs. Cheap to clone (one `Arc`); clones share keys and
/// the token cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Policy,
    keys: KeyStore,
    cache: Arc<TokenCache>,
    clock: Clock,
    /// Tokens checked in full (not answered by the cache).
    verifications: AtomicU64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner.policy.issuer)
            .field("audience", &self.inner.policy.audience)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier; keys from a URL or file are loaded on first use (or by
    /// [`Verifier::refresh_keys`]), so a role starts while its issuer is down.
    pub fn new(config: VerifierConfig, source: JwksSource) -> anyhow::Result<Self> {
        Self::with_clock(config, source, Clock::default())
    }

    pub(crate) fn with_clock(
        config: VerifierConfig,
        source: JwksSource,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        ensure!(!config.issuer.is_empty(), "the JWT issuer is empty");
        ensure!(!config.audience.is_empty(), "the JWT audience is empty");
        ensure!(
            !config.customer_claim.is_empty(),
            "the customer claim is empty"
        );
        let cache = Arc::new(TokenCache::new(config.cache_capacity));
        let keys = KeyStore::new(source, config.jwks, cache.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                policy: Policy {
                    issuer: config.issuer,
                    audience: config.audience,
                    customer_claim: config.customer_claim,
                    leeway: config.leeway,
                },
                keys,
                cache,
                clock,
                verifications: AtomicU64::new(0),
            }),
        })
    }

    /// The caller of a bearer token (the token alone, without `Bearer `).
    pub async fn verify(&self, bearer_token: &str) -> Result<Identity, AuthError> {
        let inner = &*self.inner;
        if bearer_token.len() > token::MAX_TOKEN_LEN {
            return Err(AuthError::Malformed("token too long"));
        }
        inner.keys.refresh_if_stale().await;
        let hash = cache::hash(bearer_token);
        if let Some(identity) = inner.cache.get(&hash, inner.clock.now()) {
            return Ok(identity);
        }
        inner.verifications.fetch_add(1, Ordering::Relaxed);
        let parts = token::split(bearer_token)?;
        let header = token::parse_header(parts.header)?;
        if parts.signature.is_empty() {
            return Err(AuthError::Malformed("unsigned token"));
        }
        // Read before the key: if a load withdraws keys meanwhile, the token
        // is answered but not cached.
        let generation = inner.cache.generation();
        let key = inner
            .keys
            .key_for(header.kid.as_deref(), header.alg)
            .await?;
        check_signature(&key, header.alg, &parts)?;
        let claims = claims::parse(&token::decode_part(parts.payload)?)?;
        let now = inner.clock.now();
        let checked = inner.policy.check(&claims, now)?;
        inner.cache.insert(
            hash,
            checked.identity.clone(),
            checked.valid_until,
            now,
            generation,
        );
        Ok(checked.identity)
    }

    /// The caller of a request, from its `Authorization` header value (see
    /// [`parse_bearer`]).
    pub async fn verify_authorization(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<Identity, AuthError> {
        self.verify(parse_bearer(authorization)?).await
    }

    /// Loads the key set now (at start, to warm up and to log a bad
    /// configuration early); the number of usable keys.
    pub async fn refresh_keys(&self) -> Result<usize, AuthError> {
        self.inner.keys.refresh().await
    }

    /// The issuer this verifier accepts.
    pub fn issuer(&self) -> &str {
        &self.inner.policy.issuer
    }

    /// The audience this verifier accepts.
    pub fn audience(&self) -> &str {
        &self.inner.policy.audience
    }

    #[cfg(test)]
    pub(crate) fn verifications(&self) -> u64 {
        self.inner.verifications.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn cached_tokens(&self) -> usize {
        self.inner.cache.len()
    }
}

fn check_signature(key: &DecodingKey, alg: Alg, parts: &Parts<'_>) -> Result<(), AuthError> {
    let signature = token::decode_part(parts.signature)?;
    // RustCrypto's provider called directly, never the process-wide default:
    // with both of jsonwebtoken's backends compiled in (features unify across
    // a workspace) the default would panic.
    let verifier =
        (DEFAULT_PROVIDER.verifier_factory)(&alg.jwt(), key).map_err(|_| AuthError::UnknownKey)?;
    verifier
        .verify(parts.signing_input.as_bytes(), &signature)
        .map_err(|_| AuthError::BadSignature)
}
