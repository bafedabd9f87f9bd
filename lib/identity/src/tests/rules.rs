//! Every rule of the verifier, each bad token refused with its own error.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use super::support::{self, AUDIENCE, ISSUER, TestKey, claims, sign, verifier};
use crate::claims::unix_secs;
use crate::error::AuthError;

#[tokio::test]
async fn a_good_token_of_each_algorithm_verifies() {
    let keys = [
        TestKey::rsa("rsa"),
        TestKey::p256("ec"),
        TestKey::ed25519("ed"),
    ];
    let (verifier, _) = verifier(&keys.iter().collect::<Vec<_>>());
    for key in &keys {
        let mut claims = claims("c-42");
        claims["scope"] = json!("openid orders:admin");
        let identity = verifier.verify(&key.token(&claims)).await.expect(&key.kid);
        assert_eq!(identity.subject, "c-42");
        assert_eq!(identity.customer_id, "c-42");
        assert!(identity.admin);
        assert_eq!(
            unix_secs(identity.expires_at),
            claims["exp"].as_u64().unwrap_or_default()
        );
    }
}

#[tokio::test]
async fn no_admin_without_the_scope() {
    let key = TestKey::ed25519("ed");
    let (verifier, _) = verifier(&[&key]);
    let mut claims = claims("c-1");
    claims["scope"] = json!("openid orders:read");
    assert!(
        !verifier
            .verify(&key.token(&claims))
            .await
            .expect("valid")
            .admin
    );
}

#[tokio::test]
async fn a_forged_signature_is_refused() {
    let trusted = TestKey::ed25519("k");
    let forger = TestKey::ed25519("k");
    let (verifier, _) = verifier(&[&trusted]);
    let forged = forger.token(&claims("c-1"));
    assert_eq!(verifier.verify(&forged).await, Err(AuthError::BadSignature));
    // A good signature over other claims.
    let good = trusted.token(&claims("c-1"));
    let other = URL_SAFE_NO_PAD.encode(claims("c-2").to_string());
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[1] = &other;
    assert_eq!(
        verifier.verify(&parts.join(".")).await,
        Err(AuthError::BadSignature)
    );
    let rsa = TestKey::rsa("r");
    let (verifier, _) = support::verifier(&[&rsa]);
    let token = rsa.token(&claims("c-1"));
    let tampered = format!("{}AAAA", &token[..token.len() - 4]);
    assert_eq!(
        verifier.verify(&tampered).await,
        Err(AuthError::BadSignature)
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let key = TestKey::ed25519("k");
    let (verifier, _) = verifier(&[&key]);
    for header in [json!({"alg": "none", "kid": "k"}), json!({"alg": "none"})] {
        let unsigned = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims("c-1").to_string())
        );
        assert!(
            matches!(
                verifier.verify(&unsigned).await,
                Err(AuthError::AlgorithmNotAllowed(_))
            ),
            "{header}"
        );
    }
}

#[tokio::test]
async fn hs256_with_the_public_key_as_secret_is_refused() {
    // The classic attack: sign with HMAC, using the public key the verifier
    // trusts (its JWK, its modulus) as the secret.
    let rsa = TestKey::rsa("r");
    let ed = TestKey::ed25519("e");
    let (verifier, _) = verifier(&[&rsa, &ed]);
    let secrets = [
        rsa.jwk().to_string().into_bytes(),
        support::jwks(&[&rsa, &ed]).to_string().into_bytes(),
        URL_SAFE_NO_PAD
            .decode(rsa.jwk()["n"].as_str().unwrap_or_default())
            .unwrap_or_default(),
        URL_SAFE_NO_PAD
            .decode(ed.jwk()["x"].as_str().unwrap_or_default())
            .unwrap_or_default(),
    ];
    for (secret, kid) in secrets.iter().zip(["r", "r", "r", "e"]) {
        let key = EncodingKey::from_secret(secret).expect("an HMAC key");
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
        let token = sign(Algorithm::HS256, &key, &header, &claims("c-1"));
        assert!(
            matches!(
                verifier.verify(&token).await,
                Err(AuthError::AlgorithmNotAllowed(_))
            ),
            "HS256 with {kid}'s public key"
        );
    }
}

#[tokio::test]
async fn algorithms_outside_the_list_are_refused_even_with_a_good_key() {
    let rsa = TestKey::rsa("r");
    let (verifier, _) = verifier(&[&rsa]);
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let header = json!({"alg": support::alg_name(alg), "kid": "r"});
        let token = sign(alg, &rsa.encoding, &header, &claims("c-1"));
        assert!(
            matches!(
                verifier.verify(&token).await,
                Err(AuthError::AlgorithmNotAllowed(_))
            ),
            "{alg:?}"
        );
    }
}

#[tokio::test]
async fn a_key_is_used_only_for_its_own_algorithm() {
    // An ES256 header naming the RSA key's kid finds no key.
    let rsa = TestKey::rsa("shared");
    let ec = TestKey::p256("ec");
    let (verifier, _) = verifier(&[&rsa]);
    let header = json!({"alg": "ES256", "kid": "shared"});
    let token = sign(Algorithm::ES256, &ec.encoding, &header, &claims("c-1"));
    assert_eq!(verifier.verify(&token).await, Err(AuthError::UnknownKey));
}

#[tokio::test]
async fn expired_and_not_yet_valid() {
    let key = TestKey::ed25519("k");
    let (verifier, _) = verifier(&[&key]);
    let now = unix_secs(std::time::SystemTime::now());
    let mut expired = claims("c-1");
    expired["exp"] = json!(now - 60);
    assert_eq!(
        verifier.verify(&key.token(&expired)).await,
        Err(AuthError::Expired)
    );
    let mut future = claims("c-1");
    future["nbf"] = json!(now + 120);
    assert_eq!(
        verifier.verify(&key.token(&future)).await,
        Err(AuthError::NotYetValid)
    );
}

#[tokio::test]
async fn the_leeway_works_both_ways() {
    let key = TestKey::ed25519("k");
    let (verifier, _) = verifier(&[&key]);
    let now = unix_secs(std::time::SystemTime::now());
    let at = |exp: u64, nbf: u64| {
        let mut c = claims("c-1");
        c["exp"] = json!(exp);
        c["nbf"] = json!(nbf);
        key.token(&c)
    };
    // 30 s of leeway: 10 s past exp and 10 s before nbf are fine...
    assert!(verifier.verify(&at(now - 10, now - 100)).await.is_ok());
    assert!(verifier.verify(&at(now + 600, now + 10)).await.is_ok());
    // ...50 s are not.
    assert_eq!(
        verifier.verify(&at(now - 50, now - 100)).await,
        Err(AuthError::Expired)
    );
    assert_eq!(
        verifier.verify(&at(now + 600, now + 50)).await,
        Err(AuthError::NotYetValid)
    );
    // No leeway: 10 s past exp is too late.
    let mut strict = support::config();
    strict.leeway = std::time::Duration::ZERO;
    let (strict, _) = support::verifier_with(strict, &[&key]);
    assert_eq!(
        strict.verify(&at(now - 10, now - 100)).await,
        Err(AuthError::Expired)
    );
    assert_eq!(
        strict.verify(&at(now + 600, now + 10)).await,
        Err(AuthError::NotYetValid)
    );
}

#[tokio::test]
async fn wrong_issuer_and_audience() {
    let key = TestKey::ed25519("k");
    let (verifier, _) = verifier(&[&key]);
    let mut c = claims("c-1");
    c["iss"] = json!("https://evil.test/");
    assert_eq!(
        verifier.verify(&key.token(&c)).await,
        Err(AuthError::WrongIssuer)
    );
    let mut c = claims("c-1");
    c["iss"] = json!(format!("{ISSUER}/"));
    assert_eq!(
        verifier.verify(&key.token(&c)).await,
        Err(AuthError::WrongIssuer),
        "exact match only"
    );
    let mut c = claims("c-1");
    c["aud"] = json!("billing");
    assert_eq!(
        verifier.verify(&key.token(&c)).await,
        Err(AuthError::WrongAudience)
    );
    c["aud"] = json!(["billing", AUDIENCE]);
    assert!(
        verifier.verify(&key.token(&c)).await.is_ok(),
        "one of several"
    );
}

#[tokio::test]
async fn an_unknown_kid_is_refused() {
    let trusted = TestKey::ed25519("trusted");
    let stranger = TestKey::ed25519("stranger");
    let (verifier, _) = verifier(&[&trusted]);
    assert_eq!(
        verifier.verify(&stranger.token(&claims("c-1"))).await,
        Err(AuthError::UnknownKey)
    );
}

#[tokio::test]
async fn claims_that_must_be_there() {
    let key = TestKey::ed25519("k");
    let (verifier, _) = verifier(&[&key]);
    for claim in ["sub", "exp", "iss", "aud"] {
        let mut c = claims("c-1");
        c.as_object_mut().map(|m| m.remove(claim));
        assert_eq!(
            verifier.verify(&key.token(&c)).await,
            Err(AuthError::MissingClaim(claim.into())),
            "{claim}"
        );
    }
}

#[tokio::test]
async fn the_customer_claim_is_configurable() {
    let key = TestKey::ed25519("k");
    let mut config = support::config();
    config.customer_claim = "customer_id".into();
    let (verifier, _) = support::verifier_with(config, &[&key]);
    let mut c = claims("auth0|5f1e");
    assert_eq!(
        verifier.verify(&key.token(&c)).await,
        Err(AuthError::MissingClaim("customer_id".into()))
    );
    c["customer_id"] = json!("cust-7");
    let identity = verifier.verify(&key.token(&c)).await.expect("valid");
    assert_eq!(identity.subject, "auth0|5f1e");
    assert_eq!(identity.customer_id, "cust-7");
}

#[tokio::test]
async fn garbage_is_malformed_and_never_panics() {
    let key = TestKey::ed25519("k");
    let (verifier, _) = verifier(&[&key]);
    let good = key.token(&claims("c-1"));
    let (header, rest) = good.split_once('.').unwrap_or_default();
    let inputs = [
        String::new(),
        "x".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "!!!.???.***".into(),
        format!("{header}.{rest}.extra"),
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode("not json")),
        format!("{header}.{}.c2ln", URL_SAFE_NO_PAD.encode("[1,2]")),
        format!("{header}.!!!.c2ln"),
        "é.é.é".into(),
        "a".repeat(20_000),
    ];
    for input in inputs {
        let result = verifier.verify(&input).await;
        assert!(
            matches!(
                result,
                Err(AuthError::Malformed(_)) | Err(AuthError::BadSignature)
            ),
            "{input:.40}: {result:?}"
        );
    }
}
