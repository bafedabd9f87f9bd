//! Keys from a JWKS file (`--jwks-file`).

use std::path::Path;
use std::time::Duration;

use super::support::{TestKey, claims, config, jwks};
use crate::error::AuthError;
use crate::jwks::{JwksOptions, JwksSource};
use crate::verifier::Verifier;

const INTERVAL: Duration = Duration::from_millis(100);

fn from_file(path: &Path) -> Verifier {
    let mut config = config();
    config.jwks = JwksOptions {
        min_refresh_interval: INTERVAL,
        ..JwksOptions::default()
    };
    Verifier::new(config, JwksSource::File(path.to_owned())).expect("a verifier")
}

fn write(path: &Path, keys: &[&TestKey]) {
    std::fs::write(path, jwks(keys).to_string()).expect("written");
}

async fn wait() {
    tokio::time::sleep(INTERVAL + Duration::from_millis(20)).await;
}

#[tokio::test]
async fn the_file_is_read_again_when_a_kid_is_new_to_it() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let path = dir.path().join("jwks.json");
    let (a, b) = (TestKey::ed25519("a"), TestKey::rsa("b"));
    write(&path, &[&a]);
    let verifier = from_file(&path);
    let a_token = a.token(&claims("c-1"));
    assert!(verifier.verify(&a_token).await.is_ok());
    assert_eq!(
        verifier.verify(&b.token(&claims("c-1"))).await,
        Err(AuthError::UnknownKey)
    );

    write(&path, &[&a, &b]);
    wait().await;
    assert!(verifier.verify(&b.token(&claims("c-1"))).await.is_ok());

    // a leaves the file: its tokens stop once a load has seen that.
    write(&path, &[&b]);
    wait().await;
    let stranger = TestKey::ed25519("z");
    assert_eq!(
        verifier.verify(&stranger.token(&claims("c-1"))).await,
        Err(AuthError::UnknownKey)
    );
    assert_eq!(verifier.verify(&a_token).await, Err(AuthError::UnknownKey));
}

#[tokio::test]
async fn a_missing_file_is_unavailable_until_it_appears() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let path = dir.path().join("later.json");
    let key = TestKey::ed25519("k");
    let verifier = from_file(&path);
    let refused = verifier.verify(&key.token(&claims("c-1"))).await;
    assert!(
        matches!(&refused, Err(e) if e.is_unavailable()),
        "{refused:?}"
    );
    write(&path, &[&key]);
    wait().await;
    assert!(verifier.verify(&key.token(&claims("c-1"))).await.is_ok());
}

#[tokio::test]
async fn a_garbled_file_keeps_the_keys_there_were() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let path = dir.path().join("jwks.json");
    let key = TestKey::ed25519("k");
    write(&path, &[&key]);
    let verifier = from_file(&path);
    assert_eq!(verifier.refresh_keys().await, Ok(1));
    std::fs::write(&path, "{ half a document").expect("written");
    assert!(verifier.refresh_keys().await.is_err());
    assert!(verifier.verify(&key.token(&claims("c-1"))).await.is_ok());
}
