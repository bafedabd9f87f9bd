//! Tokens already verified, keyed by their SHA-256, so a client that sends
//! the same token on every call pays a hash and a lookup, not a signature
//! check. An entry lives until its token's `exp` plus the leeway, never past.
//!
//! When full, expired entries go first, then the entry that expires soonest:
//! it has the least use left, and a flood of new tokens cannot push out the
//! long-lived ones every client is reusing. Both are O(log n) through an
//! index ordered by expiry.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::identity::Identity;

/// How many verified tokens a verifier remembers by default.
pub const DEFAULT_TOKEN_CACHE_CAPACITY: usize = 10_000;

pub(crate) type TokenHash = [u8; 32];

pub(crate) fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Debug)]
pub(crate) struct TokenCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<TokenHash, Entry>,
    /// (valid_until, hash) of every entry, soonest first.
    by_expiry: BTreeSet<(u64, TokenHash)>,
    /// Counts [`TokenCache::clear`]s: a token checked against keys from
    /// before one is not stored after it.
    generation: u64,
}

#[derive(Debug)]
struct Entry {
    identity: Identity,
    valid_until: u64,
}

impl TokenCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The identity for a token verified before and still valid at `now`.
    pub(crate) fn get(&self, key: &TokenHash, now: u64) -> Option<Identity> {
        let mut inner = self.lock();
        let valid_until = inner.entries.get(key)?.valid_until;
        if now >= valid_until {
            inner.remove(key, valid_until);
            return None;
        }
        inner.entries.get(key).map(|entry| entry.identity.clone())
    }

    /// The generation to pass to [`TokenCache::insert`], read before the
    /// token's key is looked up.
    pub(crate) fn generation(&self) -> u64 {
        self.lock().generation
    }

    pub(crate) fn insert(
        &self,
        key: TokenHash,
        identity: Identity,
        valid_until: u64,
        now: u64,
        generation: u64,
    ) {
        if self.capacity == 0 || now >= valid_until {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if let Some(old) = inner.entries.get(&key).map(|e| e.valid_until) {
            inner.remove(&key, old);
        }
        while inner.entries.len() >= self.capacity {
            // Expired or not, the first in the index is the one to drop.
            let Some(&(until, victim)) = inner.by_expiry.first() else {
                break;
            };
            inner.remove(&victim, until);
        }
        inner.by_expiry.insert((valid_until, key));
        inner.entries.insert(
            key,
            Entry {
                identity,
                valid_until,
            },
        );
    }

    /// Forgets every token, e.g. once a signing key has left the key set.
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.by_expiry.clear();
        inner.generation += 1;
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing here can leave the maps half-updated on a panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn remove(&mut self, key: &TokenHash, valid_until: u64) {
        self.entries.remove(key);
        self.by_expiry.remove(&(valid_until, *key));
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn identity(customer: &str) -> Identity {
        Identity {
            subject: customer.into(),
            customer_id: customer.into(),
            admin: false,
            expires_at: UNIX_EPOCH,
        }
    }

    #[test]
    fn answers_until_valid_until_and_never_after() {
        let cache = TokenCache::new(10);
        let key = hash("a.b.c");
        cache.insert(key, identity("c-1"), 100, 50, 0);
        assert_eq!(
            cache.get(&key, 99).map(|i| i.customer_id),
            Some("c-1".into())
        );
        assert_eq!(cache.get(&key, 100), None);
        assert_eq!(cache.len(), 0, "the expired entry is dropped");
        cache.insert(key, identity("c-1"), 100, 100, 0);
        assert_eq!(cache.len(), 0, "an expired token is never stored");
    }

    #[test]
    fn bounded_dropping_expired_then_soonest() {
        let cache = TokenCache::new(3);
        cache.insert(hash("expired"), identity("e"), 10, 5, 0);
        cache.insert(hash("late"), identity("l"), 1000, 5, 0);
        cache.insert(hash("soon"), identity("s"), 200, 5, 0);
        cache.insert(hash("new"), identity("n"), 500, 20, 0);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&hash("expired"), 5).is_none());
        assert!(cache.get(&hash("soon"), 20).is_some());
        cache.insert(hash("newer"), identity("w"), 600, 20, 0);
        assert_eq!(cache.len(), 3);
        assert!(
            cache.get(&hash("soon"), 20).is_none(),
            "the soonest to expire went"
        );
        for kept in ["late", "new", "newer"] {
            assert!(cache.get(&hash(kept), 20).is_some(), "{kept}");
        }
    }

    #[test]
    fn many_inserts_stay_bounded() {
        let cache = TokenCache::new(100);
        for i in 0..1000u64 {
            cache.insert(hash(&i.to_string()), identity("c"), 10_000 + i, 0, 0);
        }
        assert_eq!(cache.len(), 100);
        assert!(cache.get(&hash("999"), 0).is_some());
        assert!(cache.get(&hash("0"), 0).is_none());
    }

    #[test]
    fn reinserting_replaces() {
        let cache = TokenCache::new(2);
        cache.insert(hash("t"), identity("a"), 100, 0, 0);
        cache.insert(hash("t"), identity("b"), 200, 0, 0);
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.get(&hash("t"), 150).map(|i| i.customer_id),
            Some("b".into())
        );
    }

    #[test]
    fn nothing_checked_before_a_clear_is_stored_after_it() {
        let cache = TokenCache::new(10);
        let before = cache.generation();
        cache.clear();
        cache.insert(hash("t"), identity("a"), 100, 0, before);
        assert!(cache.get(&hash("t"), 0).is_none());
        cache.insert(hash("t"), identity("a"), 100, 0, cache.generation());
        assert!(cache.get(&hash("t"), 0).is_some());
    }

    #[test]
    fn zero_capacity_stores_nothing() {
        let cache = TokenCache::new(0);
        cache.insert(hash("t"), identity("a"), 100, 0, 0);
        assert!(cache.get(&hash("t"), 0).is_none());
    }
}
