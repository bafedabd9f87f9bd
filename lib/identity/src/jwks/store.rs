//! The verifier's key set and when to load it again.
//!
//! - A token whose `kid` is not in the set makes the store load it again
//!   (a key rotated in), at most once per `min_refresh_interval`, so tokens
//!   with made-up kids cannot turn into a flood of requests to the issuer.
//! - The set is also loaded again once it is older than its max age (the
//!   server's `Cache-Control: max-age`, kept between a floor and a ceiling),
//!   by one caller while the others go on with the keys they have.
//! - A failed load keeps the keys already there: an issuer that is down
//!   must not turn every customer away. With no keys at all, or when the
//!   load that should have found a new kid failed, callers get
//!   `JwksUnavailable` (retry), not `UnknownKey`.
//! - A load that takes a key away empties the token cache, so tokens signed
//!   with a withdrawn key stop working at once, cached or not.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;

use super::http::HttpFetcher;
use super::keyset::{KeySet, MAX_JWKS_BYTES};
use crate::cache::TokenCache;
use crate::error::AuthError;
use crate::token::Alg;

/// Where a verifier's keys come from.
#[derive(Clone, Debug)]
pub enum JwksSource {
    /// Fetched from an `https://` URL (`http://` to loopback hosts only);
    /// `ca_pem` adds CA certificates to the system's, for a private CA.
    Url {
        url: String,
        ca_pem: Option<Vec<u8>>,
    },
    /// Read from a file, again when a token names a key it lacks.
    File(PathBuf),
    /// A fixed key set (JWKS JSON), e.g. the development issuer's.
    Json(String),
}

/// How the key set is kept fresh. `Default` gives the production values.
#[derive(Clone, Debug)]
pub struct JwksOptions {
    /// Least time between two loads (an unknown `kid` waits for it).
    pub min_refresh_interval: Duration,
    /// How long a set is used before loading it again, when its server says
    /// nothing (and for files).
    pub default_max_age: Duration,
    /// Bounds on a server's `max-age`: `no-cache` does not mean every call,
    /// a day does not mean a day.
    pub max_age_floor: Duration,
    pub max_age_ceiling: Duration,
    /// Longest one fetch may take, connecting included.
    pub fetch_timeout: Duration,
}

impl Default for JwksOptions {
    fn default() -> Self {
        Self {
            min_refresh_interval: Duration::from_secs(5),
            default_max_age: Duration::from_secs(5 * 60),
            max_age_floor: Duration::from_secs(60),
            max_age_ceiling: Duration::from_secs(60 * 60),
            fetch_timeout: Duration::from_secs(10),
        }
    }
}

enum Loader {
    Fixed,
    File(PathBuf),
    Http(Box<HttpFetcher>),
}

pub(crate) struct KeyStore {
    loader: Loader,
    options: JwksOptions,
    state: RwLock<State>,
    /// Held while loading: one load at a time.
    loading: tokio::sync::Mutex<()>,
    /// Emptied when a load takes a key away.
    cache: Arc<TokenCache>,
}

#[derive(Default)]
struct State {
    keys: Option<Arc<KeySet>>,
    loaded_at: Option<Instant>,
    max_age: Duration,
    last_attempt: Option<Instant>,
    /// Why the last load failed; cleared by one that succeeds.
    last_error: Option<String>,
}

impl KeyStore {
    pub(crate) fn new(
        source: JwksSource,
        options: JwksOptions,
        cache: Arc<TokenCache>,
    ) -> anyhow::Result<Self> {
        let mut state = State::default();
        let loader = match source {
            JwksSource::Url { url, ca_pem } => Loader::Http(Box::new(HttpFetcher::new(
                &url,
                ca_pem.as_deref(),
                options.fetch_timeout,
            )?)),
            JwksSource::File(path) => Loader::File(path),
            JwksSource::Json(json) => {
                let keys = KeySet::parse(json.as_bytes())?;
                state.keys = Some(Arc::new(keys));
                Loader::Fixed
            }
        };
        Ok(Self {
            loader,
            options,
            state: RwLock::new(state),
            loading: tokio::sync::Mutex::new(()),
            cache,
        })
    }

    /// The key for a token's `kid` and algorithm, loading the set again if
    /// it lacks one (at most once per `min_refresh_interval`).
    pub(crate) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Alg,
    ) -> Result<DecodingKey, AuthError> {
        if let Some(key) = self.find(kid, alg) {
            return Ok(key);
        }
        let _loading = self.loading.lock().await;
        // Whoever held the lock before may just have loaded it.
        if let Some(key) = self.find(kid, alg) {
            return Ok(key);
        }
        if self.may_load(Instant::now()) {
            self.load().await;
        }
        if let Some(key) = self.find(kid, alg) {
            return Ok(key);
        }
        let state = self.read();
        match (&state.keys, &state.last_error) {
            (_, Some(error)) => Err(AuthError::JwksUnavailable(error.clone())),
            (None, None) => Err(AuthError::JwksUnavailable("no key set loaded yet".into())),
            (Some(_), None) => Err(AuthError::UnknownKey),
        }
    }

    /// Loads the set again if it is older than its max age; if another
    /// caller is already loading, goes on at once with the current set.
    pub(crate) async fn refresh_if_stale(&self) {
        if !self.is_stale(Instant::now()) {
            return;
        }
        let Ok(_loading) = self.loading.try_lock() else {
            return;
        };
        if self.is_stale(Instant::now()) {
            self.load().await;
        }
    }

    /// Loads the set now, whatever its age; the number of usable keys.
    pub(crate) async fn refresh(&self) -> Result<usize, AuthError> {
        let _loading = self.loading.lock().await;
        self.load().await;
        let state = self.read();
        match (&state.last_error, &state.keys) {
            (Some(error), _) => Err(AuthError::JwksUnavailable(error.clone())),
            (None, Some(keys)) => Ok(keys.len()),
            (None, None) => Err(AuthError::JwksUnavailable("no key set loaded".into())),
        }
    }

    fn find(&self, kid: Option<&str>, alg: Alg) -> Option<DecodingKey> {
        let keys = self.read().keys.clone()?;
        keys.find(kid, alg).map(|k| k.key.clone())
    }

    fn may_load(&self, now: Instant) -> bool {
        if matches!(self.loader, Loader::Fixed) {
            return false;
        }
        self.read()
            .last_attempt
            .is_none_or(|last| now.duration_since(last) >= self.options.min_refresh_interval)
    }

    fn is_stale(&self, now: Instant) -> bool {
        let stale = {
            let state = self.read();
            match (&state.keys, state.loaded_at) {
                (Some(_), Some(loaded)) => now.duration_since(loaded) >= state.max_age,
                _ => false,
            }
        };
        stale && self.may_load(now)
    }

    /// One load, with the `loading` lock held by the caller.
    async fn load(&self) {
        let started = Instant::now();
        self.write().last_attempt = Some(started);
        let loaded = match &self.loader {
            Loader::Fixed => return,
            Loader::File(path) => read_file(path).await.map(|body| (body, None)),
            Loader::Http(fetcher) => fetcher.fetch().await.map(|f| (f.body.to_vec(), f.max_age)),
        };
        let parsed = loaded.and_then(|(body, max_age)| {
            KeySet::parse(&body)
                .map(|keys| (keys, max_age))
                .map_err(|e| e.to_string())
        });
        match parsed {
            Ok((keys, max_age)) => self.replace(keys, max_age, started),
            Err(error) => {
                tracing::warn!(%error, "loading the JWKS failed; keeping the keys there were");
                self.write().last_error = Some(error);
            }
        }
    }

    fn replace(&self, keys: KeySet, max_age: Option<Duration>, at: Instant) {
        // Not `clamp`, which panics should the floor be set above the ceiling.
        let max_age = max_age
            .unwrap_or(self.options.default_max_age)
            .max(self.options.max_age_floor)
            .min(self.options.max_age_ceiling);
        let (count, skipped) = (keys.len(), keys.skipped);
        let (changed, removed) = {
            let mut state = self.write();
            let (changed, removed) = match &state.keys {
                None => (true, false),
                Some(old) => {
                    let (old, new) = (old.kids(), keys.kids());
                    (old != new, !old.is_subset(&new))
                }
            };
            state.keys = Some(Arc::new(keys));
            state.loaded_at = Some(at);
            state.max_age = max_age;
            state.last_error = None;
            (changed, removed)
        };
        // Loaded every few minutes: only a change is worth an info line.
        if changed {
            tracing::info!(keys = count, skipped, ?max_age, "JWKS loaded");
        } else {
            tracing::debug!(keys = count, skipped, ?max_age, "JWKS loaded, unchanged");
        }
        if removed {
            tracing::info!("a signing key left the JWKS; forgetting verified tokens");
            self.cache.clear();
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn read_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let metadata = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("{shown}: {e}"))?;
    if metadata.len() > MAX_JWKS_BYTES as u64 {
        return Err(format!("{shown}: larger than {MAX_JWKS_BYTES} bytes"));
    }
    tokio::fs::read(path)
        .await
        .map_err(|e| format!("{shown}: {e}"))
}
