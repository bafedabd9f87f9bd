//! The token cache, seen from the verifier.

use serde_json::json;

use super::support::{self, TestKey, claims, verifier};
use crate::claims::unix_secs;
use crate::error::AuthError;

#[tokio::test]
async fn a_repeated_token_is_not_verified_again() {
    let key = TestKey::ed25519("k");
    let (verifier, _) = verifier(&[&key]);
    let token = key.token(&claims("c-1"));
    for _ in 0..5 {
        assert_eq!(
            verifier.verify(&token).await.map(|i| i.customer_id),
            Ok("c-1".into())
        );
    }
    assert_eq!(verifier.verifications(), 1);
    let other = key.token(&claims("c-2"));
    assert!(verifier.verify(&other).await.is_ok());
    assert_eq!(verifier.verifications(), 2);
    // Clones share the cache.
    assert!(verifier.clone().verify(&token).await.is_ok());
    assert_eq!(verifier.verifications(), 2);
}

#[tokio::test]
async fn refusals_are_not_cached() {
    let key = TestKey::ed25519("k");
    let (verifier, _) = verifier(&[&key]);
    let mut c = claims("c-1");
    c["aud"] = json!("billing");
    let token = key.token(&c);
    for _ in 0..3 {
        assert_eq!(verifier.verify(&token).await, Err(AuthError::WrongAudience));
    }
    assert_eq!(verifier.verifications(), 3);
    assert_eq!(verifier.cached_tokens(), 0);
}

#[tokio::test]
async fn a_cached_token_never_outlives_its_expiry() {
    let key = TestKey::ed25519("k");
    let (verifier, clock) = verifier(&[&key]);
    let now = unix_secs(std::time::SystemTime::now());
    let mut c = claims("c-1");
    c["exp"] = json!(now + 60);
    let token = key.token(&c);
    assert!(verifier.verify(&token).await.is_ok());
    // exp + 30 s of leeway is 90 s away.
    clock.advance(80);
    assert!(verifier.verify(&token).await.is_ok());
    assert_eq!(verifier.verifications(), 1, "answered from the cache");
    clock.advance(15);
    assert_eq!(verifier.verify(&token).await, Err(AuthError::Expired));
    assert_eq!(verifier.verifications(), 2, "checked again, and refused");
}

#[tokio::test]
async fn the_cache_is_bounded() {
    let key = TestKey::ed25519("k");
    let mut config = support::config();
    config.cache_capacity = 8;
    let (verifier, _) = support::verifier_with(config, &[&key]);
    for i in 0..20 {
        assert!(
            verifier
                .verify(&key.token(&claims(&format!("c-{i}"))))
                .await
                .is_ok()
        );
    }
    assert_eq!(verifier.cached_tokens(), 8);
}
