//! Bounds on everything a client controls, in one place so every service and
//! the gateway refuse the same inputs with the same words.

/// Longest id a client may send (customer, product, order, idempotency key).
pub const MAX_ID_LEN: usize = 128;
/// Most line items in one order or reservation.
pub const MAX_ITEMS: usize = 100;
/// Most units of one product in one line item.
pub const MAX_QUANTITY: i32 = 10_000;
/// Largest page a list call returns.
pub const MAX_PAGE_SIZE: usize = 500;

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

/// The size of a page a list call returns: `requested`, or `default` when
/// the caller sent 0, at most `max`; a negative size is refused.
pub fn page_size(requested: i32, default: usize, max: usize) -> Result<usize, String> {
    match usize::try_from(requested) {
        Ok(0) => Ok(default),
        Ok(size) => Ok(size.min(max)),
        Err(_) => Err(format!("page_size must not be negative, got {requested}")),
    }
}

/// A page from rows fetched with one row more than `size`: the page, and
/// the token of the next page (from its last row), empty on the last page.
pub fn split_page<T>(
    mut rows: Vec<T>,
    size: usize,
    token: impl Fn(&T) -> String,
) -> (Vec<T>, String) {
    if rows.len() <= size {
        return (rows, String::new());
    }
    rows.truncate(size);
    let next = rows.last().map(token).unwrap_or_default();
    (rows, next)
}

/// The words a service answers a page token it did not issue with.
pub const FOREIGN_PAGE_TOKEN: &str =
    "page_token is not one this service issued; start again without it";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0, 20, 100), Ok(20));
        assert_eq!(page_size(7, 20, 100), Ok(7));
        assert_eq!(page_size(1000, 20, 100), Ok(100));
        assert!(page_size(-1, 20, 100).is_err());
    }

    #[test]
    fn pages_split_on_the_extra_row() {
        assert_eq!(
            split_page(vec![1, 2], 2, i32::to_string),
            (vec![1, 2], String::new())
        );
        assert_eq!(
            split_page(vec![1, 2, 3], 2, i32::to_string),
            (vec![1, 2], "2".to_owned())
        );
    }

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
