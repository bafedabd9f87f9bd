//! The one boundary between the wire types and the domain types every
//! service shares: money and time. Each service converts its own messages
//! (orders, products, payments) in its `grpc.rs` through these.

use ordermesh_domain::{Currency, Money, MoneyError};

use crate::common::v1::Money as ProtoMoney;

impl From<Money> for ProtoMoney {
    fn from(money: Money) -> Self {
        Self {
            currency_code: money.currency.as_str().to_owned(),
            minor_units: money.minor_units,
        }
    }
}

impl TryFrom<&ProtoMoney> for Money {
    type Error = MoneyError;

    fn try_from(money: &ProtoMoney) -> Result<Self, Self::Error> {
        Ok(Money::new(
            Currency::parse(&money.currency_code)?,
            money.minor_units,
        ))
    }
}

/// A point in time kept as Unix milliseconds, as a `google.protobuf.Timestamp`.
pub fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        // 0..=999_000_000: always fits.
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_round_trips_and_refuses_bad_currencies() {
        let money = Money::new(Currency::USD, 1299);
        let proto = ProtoMoney::from(money);
        assert_eq!(proto.currency_code, "USD");
        assert_eq!(Money::try_from(&proto), Ok(money));
        let bad = ProtoMoney {
            currency_code: "dollars".into(),
            minor_units: 1,
        };
        assert!(Money::try_from(&bad).is_err());
    }

    #[test]
    fn timestamps_before_and_after_the_epoch() {
        assert_eq!(
            timestamp(1_500),
            prost_types::Timestamp {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            timestamp(-1),
            prost_types::Timestamp {
                seconds: -1,
                nanos: 999_000_000
            }
        );
    }
}
