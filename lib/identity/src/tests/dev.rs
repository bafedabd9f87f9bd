//! The development issuer, and [`crate::from_settings`] as the App calls it.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::dev_issuer::{DEV_ISSUER, DEV_JWKS_FILE, DEV_KEY_FILE, DevIssuer, DevIssuerError};
use crate::error::AuthError;
use crate::settings::IdentitySettings;
use crate::{TokenResponse, from_settings};

const HOUR: Duration = Duration::from_secs(3600);

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0)
}

#[tokio::test]
async fn the_key_is_made_0600_and_reused() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let first = DevIssuer::load_or_create(dir.path()).expect("started");
    assert_eq!(first.key_path(), dir.path().join(DEV_KEY_FILE));
    assert_eq!(mode(first.key_path()), 0o600);
    let second = DevIssuer::load_or_create(dir.path()).expect("started again");
    assert_eq!(first.kid(), second.kid(), "the same key");
    assert_eq!(first.jwks(), second.jwks());
    let other =
        DevIssuer::load_or_create(tempfile::tempdir().expect("dir").path()).expect("started");
    assert_ne!(
        first.kid(),
        other.kid(),
        "a data dir of its own, a key of its own"
    );
}

#[tokio::test]
async fn a_key_others_may_read_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let issuer = DevIssuer::load_or_create(dir.path()).expect("started");
    std::fs::set_permissions(issuer.key_path(), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    assert!(matches!(
        DevIssuer::load_or_create(dir.path()),
        Err(DevIssuerError::LoosePermissions { mode: 0o644, .. })
    ));
    let settings = IdentitySettings::default();
    let refused = from_settings(&settings, dir.path())
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(refused.contains("chmod 600"), "{refused}");
}

#[tokio::test]
async fn issued_tokens_verify_with_admin_from_the_scope() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let (verifier, issuer) =
        from_settings(&IdentitySettings::default(), dir.path()).expect("built");
    let issuer = issuer.expect("the development issuer is in effect");
    assert_eq!(verifier.issuer(), DEV_ISSUER);
    let customer = verifier
        .verify(&issuer.issue("c-9", None, HOUR).expect("issued"))
        .await
        .expect("verified");
    assert_eq!(
        (customer.customer_id.as_str(), customer.subject.as_str()),
        ("c-9", "c-9")
    );
    assert!(!customer.admin);
    let admin = verifier
        .verify(
            &issuer
                .issue("ops", Some("orders:admin"), HOUR)
                .expect("issued"),
        )
        .await
        .expect("verified");
    assert!(admin.admin);
    let not_admin = verifier
        .verify(
            &issuer
                .issue("c-9", Some("orders:read"), HOUR)
                .expect("issued"),
        )
        .await
        .expect("verified");
    assert!(!not_admin.admin);
}

#[tokio::test]
async fn the_token_response_shape() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let issuer = DevIssuer::load_or_create(dir.path()).expect("started");
    let response = issuer.token_response("c-1", None, HOUR).expect("issued");
    let json = serde_json::to_value(&response).expect("serialised");
    assert_eq!(json["tokenType"], "Bearer");
    assert_eq!(json["expiresIn"], 3600);
    assert!(
        json["accessToken"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3)
    );
    assert_eq!(json.as_object().map(|o| o.len()), Some(3));
    let back: TokenResponse = serde_json::from_value(json).expect("read back");
    assert_eq!(back, response);
}

#[tokio::test]
async fn two_apps_on_one_data_dir_agree_and_on_two_do_not() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let settings = IdentitySettings::default();
    let (one, issuer_one) = from_settings(&settings, dir.path()).expect("built");
    let (two, _) = from_settings(&settings, dir.path()).expect("built twice");
    let token = issuer_one
        .expect("dev issuer")
        .issue("c-1", None, HOUR)
        .expect("issued");
    assert!(one.verify(&token).await.is_ok());
    assert!(two.verify(&token).await.is_ok());
    let elsewhere = tempfile::tempdir().expect("a temporary dir");
    let (three, _) = from_settings(&settings, elsewhere.path()).expect("built");
    assert_eq!(three.verify(&token).await, Err(AuthError::UnknownKey));
}

#[tokio::test]
async fn a_single_role_process_reads_the_written_jwks() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let (_, issuer) = from_settings(&IdentitySettings::default(), dir.path()).expect("built");
    let issuer = issuer.expect("dev issuer");
    assert_eq!(issuer.jwks_path(), dir.path().join(DEV_JWKS_FILE));
    let settings = IdentitySettings {
        jwks_file: Some(issuer.jwks_path().to_owned()),
        jwt_issuer: Some(DEV_ISSUER.into()),
        ..IdentitySettings::default()
    };
    let (order, none) =
        from_settings(&settings, tempfile::tempdir().expect("dir").path()).expect("built");
    assert!(
        none.is_none(),
        "the dev issuer is off once keys are configured"
    );
    assert!(
        order
            .verify(&issuer.issue("c-5", None, HOUR).expect("issued"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn the_dev_issuer_follows_audience_and_customer_claim() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let settings = IdentitySettings {
        jwt_audience: "shop".into(),
        customer_claim: "customer_id".into(),
        ..IdentitySettings::default()
    };
    let (verifier, issuer) = from_settings(&settings, dir.path()).expect("built");
    let token = issuer
        .expect("dev issuer")
        .issue("c-3", None, HOUR)
        .expect("issued");
    let identity = verifier.verify(&token).await.expect("verified");
    assert_eq!(identity.customer_id, "c-3");
}

#[test]
fn off_means_off() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let settings = IdentitySettings {
        dev_issuer: false,
        ..IdentitySettings::default()
    };
    assert!(
        from_settings(&settings, dir.path()).is_err(),
        "no issuer at all"
    );
    assert!(!dir.path().join(DEV_KEY_FILE).exists(), "no key made");
}
