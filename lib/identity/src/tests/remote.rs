//! Keys from a JWKS URL: HTTPS for real (rustls against a self-signed CA),
//! rotation, the refresh rate limit, max age, and an issuer that is down.

use std::time::Duration;

use super::server::{JwksServer, Reply};
use super::support::{TestKey, claims, config, jwks};
use crate::error::AuthError;
use crate::jwks::{JwksOptions, JwksSource};
use crate::verifier::Verifier;

/// Production behaviour with test-sized intervals.
fn fast(min_refresh_interval: Duration) -> JwksOptions {
    JwksOptions {
        min_refresh_interval,
        fetch_timeout: Duration::from_secs(5),
        ..JwksOptions::default()
    }
}

fn from_url(server: &JwksServer, options: JwksOptions) -> Verifier {
    let mut config = config();
    config.jwks = options;
    let source = JwksSource::Url {
        url: server.url(),
        ca_pem: server.ca_pem.clone().map(String::into_bytes),
    };
    Verifier::new(config, source).expect("a verifier")
}

#[tokio::test]
async fn https_rotation_takes_the_new_key_and_drops_the_old() {
    let old = TestKey::ed25519("old");
    let new = TestKey::p256("new");
    let server = JwksServer::tls(jwks(&[&old]).to_string()).await;
    let verifier = from_url(&server, fast(Duration::from_millis(200)));
    let old_token = old.token(&claims("c-1"));
    assert!(verifier.verify(&old_token).await.is_ok());
    assert_eq!(server.hits(), 1);

    // The issuer publishes a new key and starts signing with it.
    server.set_body(jwks(&[&old, &new]).to_string());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(verifier.verify(&new.token(&claims("c-2"))).await.is_ok());
    assert_eq!(server.hits(), 2);

    // Then withdraws the old one: once a load sees it gone (here, set off by
    // a token with a kid nobody knows), the old key's tokens are refused,
    // even one already verified and cached.
    server.set_body(jwks(&[&new]).to_string());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let stranger = TestKey::ed25519("stranger");
    assert_eq!(
        verifier.verify(&stranger.token(&claims("c-3"))).await,
        Err(AuthError::UnknownKey)
    );
    assert_eq!(server.hits(), 3);
    assert_eq!(
        verifier.verify(&old_token).await,
        Err(AuthError::UnknownKey)
    );
    assert!(verifier.verify(&new.token(&claims("c-4"))).await.is_ok());
}

#[tokio::test]
async fn a_certificate_nobody_vouches_for_is_refused() {
    let key = TestKey::ed25519("k");
    let server = JwksServer::tls(jwks(&[&key]).to_string()).await;
    let mut config = config();
    config.jwks = fast(Duration::from_millis(50));
    let source = JwksSource::Url {
        url: server.url(),
        ca_pem: None,
    };
    // Without system roots there is nothing to trust at all: refused at once.
    let Ok(verifier) = Verifier::new(config, source) else {
        return;
    };
    let refused = verifier.verify(&key.token(&claims("c-1"))).await;
    assert!(
        matches!(&refused, Err(AuthError::JwksUnavailable(why)) if why.contains("certificate")),
        "{refused:?}"
    );
    assert_eq!(
        server.hits(),
        0,
        "no request sent over an untrusted connection"
    );
}

#[tokio::test]
async fn refreshes_on_unknown_kids_are_rate_limited() {
    let key = TestKey::ed25519("k");
    let server = JwksServer::plain(jwks(&[&key]).to_string()).await;
    // Signed before the clock starts, so the burst comes right after the load.
    let strangers: Vec<TestKey> = (0..10)
        .map(|i| TestKey::ed25519(&format!("x{i}")))
        .collect();
    let tokens: Vec<String> = strangers.iter().map(|k| k.token(&claims("c-1"))).collect();
    let verifier = from_url(&server, fast(Duration::from_secs(1)));
    assert!(verifier.verify(&key.token(&claims("c-1"))).await.is_ok());
    assert_eq!(server.hits(), 1);
    // A burst of made-up kids, at once: no load, the last was too recent.
    let results = futures_join(&verifier, &tokens).await;
    assert!(
        results.iter().all(|r| *r == Err(AuthError::UnknownKey)),
        "{results:?}"
    );
    assert_eq!(server.hits(), 1);
    // After the interval, one load for the next burst.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    let results = futures_join(&verifier, &tokens).await;
    assert!(results.iter().all(|r| *r == Err(AuthError::UnknownKey)));
    assert_eq!(server.hits(), 2);
}

/// Verifies all tokens concurrently.
async fn futures_join(
    verifier: &Verifier,
    tokens: &[String],
) -> Vec<Result<crate::Identity, AuthError>> {
    let mut set = tokio::task::JoinSet::new();
    for token in tokens {
        let (verifier, token) = (verifier.clone(), token.clone());
        set.spawn(async move { verifier.verify(&token).await });
    }
    let mut results = Vec::new();
    while let Some(result) = set.join_next().await {
        results.push(result.unwrap_or(Err(AuthError::Malformed("task failed"))));
    }
    results
}

#[tokio::test]
async fn an_unreachable_issuer_is_unavailable_not_unauthenticated() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = closed.local_addr().expect("bound");
    drop(closed);
    let mut config = config();
    config.jwks = fast(Duration::from_millis(50));
    let source = JwksSource::Url {
        url: format!("http://{addr}/jwks.json"),
        ca_pem: None,
    };
    let verifier = Verifier::new(config, source).expect("built while the issuer is down");
    let key = TestKey::ed25519("k");
    let refused = verifier.verify(&key.token(&claims("c-1"))).await;
    assert!(
        matches!(&refused, Err(e) if e.is_unavailable()),
        "{refused:?}"
    );
    assert!(verifier.refresh_keys().await.is_err());
}

#[tokio::test]
async fn a_broken_answer_is_unavailable_and_recovers() {
    let key = TestKey::ed25519("k");
    let server = JwksServer::plain(String::new()).await;
    for reply in [
        Reply {
            status: 500,
            body: "oops".into(),
            cache_control: None,
        },
        Reply {
            status: 200,
            body: "<html>".into(),
            cache_control: None,
        },
        Reply {
            status: 302,
            body: String::new(),
            cache_control: None,
        },
    ] {
        server.set(reply);
        let verifier = from_url(&server, fast(Duration::from_millis(50)));
        let refused = verifier.verify(&key.token(&claims("c-1"))).await;
        assert!(
            matches!(refused, Err(AuthError::JwksUnavailable(_))),
            "{refused:?}"
        );
    }
    let verifier = from_url(&server, fast(Duration::from_millis(50)));
    assert!(verifier.verify(&key.token(&claims("c-1"))).await.is_err());
    // The issuer comes back: the next load, an interval later, succeeds.
    server.set(Reply {
        status: 200,
        body: jwks(&[&key]).to_string(),
        cache_control: None,
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(verifier.verify(&key.token(&claims("c-1"))).await.is_ok());
    assert_eq!(verifier.refresh_keys().await, Ok(1));
}

#[tokio::test]
async fn the_servers_max_age_is_honoured_and_old_keys_outlive_a_failure() {
    let key = TestKey::ed25519("k");
    let server = JwksServer::plain(String::new()).await;
    server.set(Reply {
        status: 200,
        body: jwks(&[&key]).to_string(),
        cache_control: Some("public, max-age=1".into()),
    });
    let options = JwksOptions {
        max_age_floor: Duration::ZERO,
        ..fast(Duration::from_millis(50))
    };
    let verifier = from_url(&server, options);
    let token = key.token(&claims("c-1"));
    assert!(verifier.verify(&token).await.is_ok());
    assert!(verifier.verify(&token).await.is_ok());
    assert_eq!(server.hits(), 1, "fresh for a second");
    // A second later the set is stale; the issuer now fails, and the keys
    // there were still verify.
    server.set(Reply {
        status: 503,
        body: String::new(),
        cache_control: None,
    });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(verifier.verify(&key.token(&claims("c-2"))).await.is_ok());
    assert_eq!(server.hits(), 2, "loaded again when stale");
    // A new kid now cannot be looked for: unavailable, not unknown.
    let newcomer = TestKey::ed25519("new");
    let refused = verifier.verify(&newcomer.token(&claims("c-3"))).await;
    assert!(
        matches!(&refused, Err(e) if e.is_unavailable()),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_long_max_age_is_cut_to_the_ceiling() {
    let key = TestKey::ed25519("k");
    let server = JwksServer::plain(String::new()).await;
    server.set(Reply {
        status: 200,
        body: jwks(&[&key]).to_string(),
        cache_control: Some("max-age=86400".into()),
    });
    let options = JwksOptions {
        max_age_floor: Duration::ZERO,
        max_age_ceiling: Duration::from_millis(200),
        ..fast(Duration::from_millis(50))
    };
    let verifier = from_url(&server, options);
    assert!(verifier.verify(&key.token(&claims("c-1"))).await.is_ok());
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(verifier.verify(&key.token(&claims("c-1"))).await.is_ok());
    assert_eq!(server.hits(), 2);
}
