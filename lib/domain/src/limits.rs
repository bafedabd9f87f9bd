//! Bounds on everything a client controls, in one place so every service and
//! the gateway refuse the same inputs with the same words.

/// Longest id a client may send (customer, product, order, idempotency key).
pub const MAX_ID_LEN: usize = 128;
/// Most line items in one order or reservation.
pub const MAX_ITEMS: usize = 100;
/// Most units of one product in one line item.
pub const MAX_QUANTITY: i32 = 10_000;
/// Largest page a list call returns.
pub const MAX_PAGE_SIZE: i32 = 500;

/// Checks an identifier: non-empty, at most [`MAX_ID_LEN`] characters, and
/// only ASCII letters, digits and `-_.:@`.
pub fn check_id(field: &'static str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} is required"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(format!("{field} is longer than {MAX_ID_LEN} characters"));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:@".contains(*c)))
    {
        return Err(format!(
            "{field} may hold only letters, digits and -_.:@ (found {bad:?})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(check_id("customer_id", "cust-42").is_ok());
        assert!(check_id("customer_id", "a@b.c:d_e").is_ok());
        assert_eq!(
            check_id("customer_id", "").unwrap_err(),
            "customer_id is required"
        );
        assert!(check_id("customer_id", &"x".repeat(129)).is_err());
        assert!(check_id("customer_id", "a b").is_err());
        assert!(check_id("customer_id", "é").is_err());
    }
}
