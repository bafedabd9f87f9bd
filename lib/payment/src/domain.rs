//! The payment rules in plain Rust: what a valid charge is, what each token
//! does, and how a payment's status may change.

use ordermesh_domain::limits::check_id;
use ordermesh_domain::reasons;
use ordermesh_domain::{
    Describe, ErrorDescription, ErrorKind, Money, PaymentMethod, SimulatedOutcome,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    Succeeded,
    Declined,
    Refunded,
    /// Recorded by a refund that came before any charge: the order was
    /// abandoned, so a late charge must be refused.
    Voided,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Succeeded => "SUCCEEDED",
            PaymentStatus::Declined => "DECLINED",
            PaymentStatus::Refunded => "REFUNDED",
            PaymentStatus::Voided => "VOIDED",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            PaymentStatus::Succeeded,
            PaymentStatus::Declined,
            PaymentStatus::Refunded,
            PaymentStatus::Voided,
        ]
        .into_iter()
        .find(|status| status.as_str() == value)
    }
}

/// A stored payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub payment_id: String,
    pub order_id: String,
    pub amount: Money,
    pub status: PaymentStatus,
    pub decline_reason: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A charge request that passed every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub order_id: String,
    pub amount: Money,
    pub method: PaymentMethod,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PaymentError {
    #[error("{0}")]
    Invalid(String),
    #[error("payment processor error (simulated by pm_card_processingError); nothing was charged")]
    ProcessorUnavailable,
    #[error(
        "order {order_id} was already charged {existing}; a charge of {requested} does not match"
    )]
    Conflict {
        order_id: String,
        existing: String,
        requested: String,
    },
    #[error("order {0} was abandoned and its payment voided; no charge was made")]
    Voided(String),
    #[error("no payment for order {0}")]
    NotFound(String),
    #[error(
        "a newer saga step of order {order_id} was seen (this one's fencing number: {sent:?}); its sender lost the order's lease"
    )]
    StaleStep { order_id: String, sent: Option<i64> },
}

impl Describe for PaymentError {
    fn describe(&self) -> ErrorDescription {
        let described = |kind| ErrorDescription::new(kind, self.to_string());
        match self {
            PaymentError::Invalid(_) => described(ErrorKind::InvalidArgument),
            PaymentError::ProcessorUnavailable => {
                described(ErrorKind::Unavailable).with_reason(reasons::PROCESSOR_UNAVAILABLE)
            }
            PaymentError::Conflict { order_id, .. } => described(ErrorKind::AlreadyExists)
                .with_reason(reasons::PAYMENT_CONFLICT)
                .with("order_id", order_id),
            PaymentError::Voided(order_id) => described(ErrorKind::FailedPrecondition)
                .with_reason(reasons::PAYMENT_VOIDED)
                .with("order_id", order_id),
            PaymentError::NotFound(order_id) => described(ErrorKind::NotFound)
                .with_reason(reasons::PAYMENT_NOT_FOUND)
                .with("order_id", order_id),
            PaymentError::StaleStep { order_id, .. } => described(ErrorKind::Aborted)
                .with_reason(reasons::STALE_SAGA_STEP)
                .with("order_id", order_id),
        }
    }
}

impl Charge {
    pub fn parse(
        order_id: String,
        amount: Option<Money>,
        payment_method: &str,
    ) -> Result<Self, PaymentError> {
        check_id("order_id", &order_id).map_err(PaymentError::Invalid)?;
        let amount = amount.ok_or_else(|| {
            PaymentError::Invalid("amount is required, with a currency_code and minor_units".into())
        })?;
        if amount.minor_units <= 0 {
            return Err(PaymentError::Invalid(format!(
                "amount.minor_units must be positive, got {}",
                amount.minor_units
            )));
        }
        let method = PaymentMethod::parse(payment_method)
            .map_err(|e| PaymentError::Invalid(e.to_string()))?;
        Ok(Self {
            order_id,
            amount,
            method,
        })
    }
}

/// What a charge ends as: a status and a decline reason, or a transient
/// failure that stores nothing. `random_decline` says whether the demo's
/// random decline rate hit this charge.
pub fn decide(
    method: PaymentMethod,
    random_decline: bool,
) -> Result<(PaymentStatus, Option<&'static str>), PaymentError> {
    match method.outcome() {
        SimulatedOutcome::Succeed if random_decline => {
            Ok((PaymentStatus::Declined, Some("card_declined")))
        }
        SimulatedOutcome::Succeed => Ok((PaymentStatus::Succeeded, None)),
        SimulatedOutcome::Decline(reason) => Ok((PaymentStatus::Declined, Some(reason))),
        SimulatedOutcome::TransientError => Err(PaymentError::ProcessorUnavailable),
    }
}

/// What a repeated charge for an order that already has a payment returns:
/// the stored payment for a true replay, an error otherwise.
pub fn replay(existing: Payment, charge: &Charge) -> Result<Payment, PaymentError> {
    if existing.status == PaymentStatus::Voided {
        return Err(PaymentError::Voided(existing.order_id));
    }
    if existing.amount != charge.amount {
        return Err(PaymentError::Conflict {
            order_id: existing.order_id,
            existing: existing.amount.to_string(),
            requested: charge.amount.to_string(),
        });
    }
    Ok(existing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordermesh_domain::Currency;

    fn usd(minor: i64) -> Option<Money> {
        Some(Money::new(Currency::USD, minor))
    }

    #[test]
    fn charges_are_checked() {
        assert!(Charge::parse("ord_1".into(), usd(100), "pm_card_visa").is_ok());
        assert!(matches!(
            Charge::parse(String::new(), usd(100), "pm_card_visa"),
            Err(PaymentError::Invalid(m)) if m.contains("order_id")
        ));
        assert!(matches!(
            Charge::parse("o".into(), None, "pm_card_visa"),
            Err(PaymentError::Invalid(m)) if m.contains("amount")
        ));
        assert!(matches!(
            Charge::parse("o".into(), usd(0), "pm_card_visa"),
            Err(PaymentError::Invalid(m)) if m.contains("positive")
        ));
        assert!(matches!(
            Charge::parse("o".into(), usd(1), "pm_card_nope"),
            Err(PaymentError::Invalid(m)) if m.contains("payment_method")
        ));
    }

    #[test]
    fn tokens_decide_outcomes() {
        let method = |t| PaymentMethod::parse(t).unwrap();
        assert_eq!(
            decide(method("pm_card_visa"), false),
            Ok((PaymentStatus::Succeeded, None))
        );
        assert_eq!(
            decide(method("pm_card_visa"), true),
            Ok((PaymentStatus::Declined, Some("card_declined")))
        );
        assert_eq!(
            decide(method("pm_card_insufficientFunds"), false),
            Ok((PaymentStatus::Declined, Some("insufficient_funds")))
        );
        assert_eq!(
            decide(method("pm_card_processingError"), false),
            Err(PaymentError::ProcessorUnavailable)
        );
    }

    #[test]
    fn replays_return_the_stored_payment_or_refuse() {
        let stored = Payment {
            payment_id: "pay_1".into(),
            order_id: "ord_1".into(),
            amount: Money::new(Currency::USD, 500),
            status: PaymentStatus::Succeeded,
            decline_reason: None,
            created_at_ms: 1,
            updated_at_ms: 1,
        };
        let same = Charge::parse("ord_1".into(), usd(500), "pm_card_visa").unwrap();
        assert_eq!(replay(stored.clone(), &same), Ok(stored.clone()));
        let more = Charge::parse("ord_1".into(), usd(900), "pm_card_visa").unwrap();
        assert!(matches!(
            replay(stored.clone(), &more),
            Err(PaymentError::Conflict { .. })
        ));
        let voided = Payment {
            status: PaymentStatus::Voided,
            ..stored
        };
        assert_eq!(
            replay(voided, &same),
            Err(PaymentError::Voided("ord_1".into()))
        );
    }
}
