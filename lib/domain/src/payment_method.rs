//! Payment-method tokens and the outcome each one simulates, in the style of
//! a card processor's test tokens. The order service checks a token here
//! before it stores an order; the payment service simulates its outcome.

use std::fmt;

/// What charging a payment method does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimulatedOutcome {
    Succeed,
    /// Declined; the reason is a stable snake_case code.
    Decline(&'static str),
    /// A transient processor failure: nothing is charged, try again later.
    TransientError,
}

/// A known payment-method token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentMethod {
    token: &'static str,
    outcome: SimulatedOutcome,
}

const KNOWN: &[PaymentMethod] = &[
    PaymentMethod::new("pm_card_visa", SimulatedOutcome::Succeed),
    PaymentMethod::new("pm_card_mastercard", SimulatedOutcome::Succeed),
    PaymentMethod::new("pm_card_amex", SimulatedOutcome::Succeed),
    PaymentMethod::new(
        "pm_card_chargeDeclined",
        SimulatedOutcome::Decline("card_declined"),
    ),
    PaymentMethod::new(
        "pm_card_insufficientFunds",
        SimulatedOutcome::Decline("insufficient_funds"),
    ),
    PaymentMethod::new("pm_card_processingError", SimulatedOutcome::TransientError),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PaymentMethodError {
    #[error("payment_method is required (e.g. pm_card_visa)")]
    Missing,
    #[error("unknown payment_method {0:?}; known tokens: {known}", known = PaymentMethod::known_tokens().join(", "))]
    Unknown(String),
}

impl PaymentMethod {
    const fn new(token: &'static str, outcome: SimulatedOutcome) -> Self {
        Self { token, outcome }
    }

    pub fn parse(token: &str) -> Result<Self, PaymentMethodError> {
        if token.is_empty() {
            return Err(PaymentMethodError::Missing);
        }
        KNOWN
            .iter()
            .find(|method| method.token == token)
            .copied()
            .ok_or_else(|| PaymentMethodError::Unknown(truncate_for_message(token)))
    }

    pub fn known_tokens() -> Vec<&'static str> {
        KNOWN.iter().map(|method| method.token).collect()
    }

    pub fn token(&self) -> &'static str {
        self.token
    }

    pub fn outcome(&self) -> SimulatedOutcome {
        self.outcome
    }
}

/// Logs and messages show only the token's kind, never the whole token: real
/// tokens are secrets, and the habit should be right from the start.
impl fmt::Display for PaymentMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&masked(self.token))
    }
}

/// A token's masked form, as logs show it and as it is kept once no charge
/// needs it any more: its first 8 characters and an ellipsis. Masking a
/// masked token changes nothing.
pub fn masked(token: &str) -> String {
    if token.ends_with('…') {
        return token.to_owned();
    }
    let prefix: String = token.chars().take(8).collect();
    format!("{prefix}…")
}

/// An unknown token may be a real secret pasted by mistake: echo only a
/// short prefix of it.
fn truncate_for_message(token: &str) -> String {
    let prefix: String = token.chars().take(8).collect();
    if prefix.len() < token.len() {
        format!("{prefix}…")
    } else {
        prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_keeps_a_prefix_and_is_idempotent() {
        assert_eq!(masked("pm_card_visa"), "pm_card_…");
        assert_eq!(masked(&masked("pm_card_visa")), "pm_card_…");
        let method = PaymentMethod::parse("pm_card_amex").unwrap();
        assert_eq!(method.to_string(), masked("pm_card_amex"));
    }

    #[test]
    fn tokens_choose_outcomes() {
        let outcome = |t| PaymentMethod::parse(t).unwrap().outcome();
        assert_eq!(outcome("pm_card_visa"), SimulatedOutcome::Succeed);
        assert_eq!(
            outcome("pm_card_chargeDeclined"),
            SimulatedOutcome::Decline("card_declined")
        );
        assert_eq!(
            outcome("pm_card_insufficientFunds"),
            SimulatedOutcome::Decline("insufficient_funds")
        );
        assert_eq!(
            outcome("pm_card_processingError"),
            SimulatedOutcome::TransientError
        );
    }

    #[test]
    fn unknown_and_missing_tokens_are_refused_without_echoing_them() {
        assert_eq!(PaymentMethod::parse(""), Err(PaymentMethodError::Missing));
        let error = PaymentMethod::parse("pm_live_secret123456").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("pm_live_…"), "{message}");
        assert!(!message.contains("secret123456"), "{message}");
        assert!(message.contains("pm_card_visa"), "{message}");
    }

    #[test]
    fn display_masks_the_token() {
        let visa = PaymentMethod::parse("pm_card_visa").unwrap();
        assert_eq!(visa.to_string(), "pm_card_…");
    }
}
