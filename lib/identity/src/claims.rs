//! The registered claims checked once the signature holds, and the caller's
//! identity read from them. Types are strict: `iss` and `sub` are strings,
//! `aud` a string or an array of strings, `exp`/`nbf` numbers; anything else
//! counts as absent, so a claim of the wrong type can never pass a check.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::AuthError;
use crate::identity::{ADMIN_SCOPE, Identity};

/// 9999-12-31T23:59:59Z: later dates are refused, not wrapped or saturated.
const LATEST_DATE: u64 = 253_402_300_799;

/// What the claims must say, from the settings.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) customer_claim: String,
    pub(crate) leeway: Duration,
}

/// A verified identity and the last second (Unix time) at which it holds.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) identity: Identity,
    pub(crate) valid_until: u64,
}

pub(crate) fn parse(payload: &[u8]) -> Result<Map<String, Value>, AuthError> {
    serde_json::from_slice(payload)
        .map_err(|_| AuthError::Malformed("claims are not a JSON object"))
}

impl Policy {
    /// Applies every rule to signed claims, `now` in seconds since the epoch.
    pub(crate) fn check(
        &self,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<Checked, AuthError> {
        let leeway = self.leeway.as_secs();
        match claims.get("iss") {
            None => return Err(missing("iss")),
            Some(Value::String(iss)) if *iss == self.issuer => {}
            Some(_) => return Err(AuthError::WrongIssuer),
        }
        match claims.get("aud") {
            None => return Err(missing("aud")),
            Some(aud) if audience_contains(aud, &self.audience) => {}
            Some(_) => return Err(AuthError::WrongAudience),
        }
        let exp = numeric_date(claims, "exp")?.ok_or_else(|| missing("exp"))?;
        if exp > LATEST_DATE {
            return Err(AuthError::Malformed("exp out of range"));
        }
        let valid_until = exp.saturating_add(leeway);
        if now >= valid_until {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = numeric_date(claims, "nbf")?
            && now.saturating_add(leeway) < nbf
        {
            return Err(AuthError::NotYetValid);
        }
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(missing("sub")),
        };
        let customer_id = match claims.get(&self.customer_claim) {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            // Some IdPs map a numeric user attribute as a JSON number.
            Some(Value::Number(id)) if id.is_u64() || id.is_i64() => id.to_string(),
            _ => return Err(missing(&self.customer_claim)),
        };
        let admin = match claims.get("scope") {
            Some(Value::String(scope)) => scope.split(' ').any(|s| s == ADMIN_SCOPE),
            _ => false,
        };
        Ok(Checked {
            identity: Identity {
                subject,
                customer_id,
                admin,
                expires_at: UNIX_EPOCH + Duration::from_secs(exp),
            },
            valid_until,
        })
    }
}

fn missing(claim: &str) -> AuthError {
    AuthError::MissingClaim(claim.to_owned())
}

fn audience_contains(aud: &Value, expected: &str) -> bool {
    match aud {
        Value::String(one) => one == expected,
        Value::Array(many) => many.iter().any(|a| a.as_str() == Some(expected)),
        _ => false,
    }
}

/// A NumericDate (RFC 7519 §2) as whole seconds, fractions dropped; negative
/// ones count as the epoch. A present claim that is not a number is refused.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(Some(match n.as_u64() {
            Some(secs) => secs,
            // `as` saturates: huge values become u64::MAX, negative ones 0.
            None => n.as_f64().map_or(0, |secs| secs as u64),
        })),
        Some(_) => Err(missing(name)),
    }
}

/// Seconds since the epoch, for a [`SystemTime`] (0 before it).
pub(crate) fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn policy() -> Policy {
        Policy {
            issuer: "https://idp.example".into(),
            audience: "ordermesh".into(),
            customer_claim: "sub".into(),
            leeway: Duration::from_secs(30),
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn good() -> Value {
        json!({"iss": "https://idp.example", "aud": "ordermesh", "sub": "c-1", "exp": NOW + 60})
    }

    fn with(field: &str, value: Value) -> Map<String, Value> {
        let mut map = claims(good());
        map.insert(field.into(), value);
        map
    }

    #[test]
    fn good_claims() {
        let checked = policy().check(&claims(good()), NOW).expect("valid");
        assert_eq!(checked.identity.subject, "c-1");
        assert_eq!(checked.identity.customer_id, "c-1");
        assert!(!checked.identity.admin);
        assert_eq!(checked.valid_until, NOW + 90);
        assert_eq!(unix_secs(checked.identity.expires_at), NOW + 60);
    }

    #[test]
    fn types_are_strict() {
        let p = policy();
        assert_eq!(
            p.check(&with("iss", json!(["https://idp.example"])), NOW)
                .err(),
            Some(AuthError::WrongIssuer)
        );
        assert_eq!(
            p.check(&with("aud", json!({"ordermesh": true})), NOW).err(),
            Some(AuthError::WrongAudience)
        );
        assert!(
            p.check(&with("aud", json!(["other", "ordermesh"])), NOW)
                .is_ok()
        );
        assert_eq!(
            p.check(&with("exp", json!("9999999999")), NOW).err(),
            Some(AuthError::MissingClaim("exp".into()))
        );
        assert_eq!(
            p.check(&with("sub", json!(42)), NOW).err(),
            Some(AuthError::MissingClaim("sub".into()))
        );
        let mut no_iss = claims(good());
        no_iss.remove("iss");
        assert_eq!(
            p.check(&no_iss, NOW).err(),
            Some(AuthError::MissingClaim("iss".into()))
        );
    }

    #[test]
    fn dates() {
        let p = policy();
        assert!(
            p.check(&with("exp", json!(NOW as f64 + 0.5)), NOW).is_ok(),
            "a fraction"
        );
        assert_eq!(
            p.check(&with("exp", json!(-5)), NOW).err(),
            Some(AuthError::Expired)
        );
        assert_eq!(
            p.check(&with("nbf", json!(NOW + 31)), NOW).err(),
            Some(AuthError::NotYetValid)
        );
        assert!(p.check(&with("nbf", json!(NOW + 30)), NOW).is_ok());
        assert_eq!(
            p.check(&with("exp", json!(u64::MAX)), NOW).err(),
            Some(AuthError::Malformed("exp out of range"))
        );
        assert_eq!(
            p.check(&with("exp", json!(1e300)), NOW).err(),
            Some(AuthError::Malformed("exp out of range"))
        );
        assert!(p.check(&with("exp", json!(LATEST_DATE)), NOW).is_ok());
    }

    #[test]
    fn admin_scope_is_one_word_of_the_scope() {
        let p = policy();
        let admin = |scope: Value| {
            p.check(&with("scope", scope), NOW)
                .map(|c| c.identity.admin)
        };
        assert_eq!(admin(json!("openid orders:admin profile")), Ok(true));
        assert_eq!(admin(json!("orders:admin")), Ok(true));
        assert_eq!(admin(json!("orders:administrator")), Ok(false));
        assert_eq!(admin(json!("openid orders:read")), Ok(false));
        assert_eq!(
            admin(json!(["orders:admin"])),
            Ok(false),
            "scope is a string"
        );
    }

    #[test]
    fn customer_claim_is_configurable() {
        let p = Policy {
            customer_claim: "https://shop.example/customer".into(),
            ..policy()
        };
        assert_eq!(
            p.check(&claims(good()), NOW).err(),
            Some(AuthError::MissingClaim(
                "https://shop.example/customer".into()
            ))
        );
        let checked = p
            .check(&with("https://shop.example/customer", json!("cust-9")), NOW)
            .expect("valid");
        assert_eq!(checked.identity.customer_id, "cust-9");
        assert_eq!(checked.identity.subject, "c-1");
        let numeric = p
            .check(&with("https://shop.example/customer", json!(77)), NOW)
            .expect("valid");
        assert_eq!(numeric.identity.customer_id, "77");
        assert!(
            p.check(&with("https://shop.example/customer", json!("")), NOW)
                .is_err()
        );
    }
}
