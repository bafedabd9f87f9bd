//! Money as integer minor units of one ISO 4217 currency, never floats.

use std::fmt;

/// A three-letter upper-case ISO 4217 code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub const USD: Currency = Currency(*b"USD");

    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        let bytes: [u8; 3] = code
            .as_bytes()
            .try_into()
            .map_err(|_| MoneyError::InvalidCurrency(code.to_owned()))?;
        if !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(MoneyError::InvalidCurrency(code.to_owned()));
        }
        Ok(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters get in, so this never fails.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money {
    pub currency: Currency,
    pub minor_units: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("{0:?} is not an ISO 4217 currency code (three upper-case letters)")]
    InvalidCurrency(String),
    #[error("cannot add {0} to {1}: the currencies differ")]
    CurrencyMismatch(Currency, Currency),
    #[error("amount overflows")]
    Overflow,
}

impl Money {
    pub fn new(currency: Currency, minor_units: i64) -> Self {
        Self {
            currency,
            minor_units,
        }
    }

    pub fn zero(currency: Currency) -> Self {
        Self::new(currency, 0)
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(other.currency, self.currency));
        }
        let minor_units = self
            .minor_units
            .checked_add(other.minor_units)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(self.currency, minor_units))
    }

    pub fn checked_mul(self, factor: i64) -> Result<Money, MoneyError> {
        let minor_units = self
            .minor_units
            .checked_mul(factor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Money::new(self.currency, minor_units))
    }
}

impl fmt::Display for Money {
    /// Two decimal places, right for the currencies the demo catalog uses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor_units < 0 { "-" } else { "" };
        let abs = self.minor_units.unsigned_abs();
        write!(f, "{sign}{}.{:02} {}", abs / 100, abs % 100, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for bad in ["", "usd", "US", "USDX", "U$D"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arithmetic_checks_currency_and_overflow() {
        let a = Money::new(Currency::USD, 1999);
        assert_eq!(a.checked_mul(3).unwrap().minor_units, 5997);
        assert_eq!(a.checked_add(a).unwrap().minor_units, 3998);
        let eur = Money::new(Currency::parse("EUR").unwrap(), 1);
        assert!(matches!(
            a.checked_add(eur),
            Err(MoneyError::CurrencyMismatch(_, _))
        ));
        assert_eq!(
            Money::new(Currency::USD, i64::MAX).checked_mul(2),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn displays_minor_units() {
        assert_eq!(Money::new(Currency::USD, 1999).to_string(), "19.99 USD");
        assert_eq!(Money::new(Currency::USD, -5).to_string(), "-0.05 USD");
    }
}
