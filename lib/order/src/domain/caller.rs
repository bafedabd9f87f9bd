//! Who is calling, and what they may see and touch: the ownership rules,
//! in plain Rust. The customer is who the token says (its customer claim),
//! never a field the client types; an `orders:admin` caller may read, watch,
//! cancel and list any order, but places orders only as itself.

/// A caller proven by its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject, for the audit log.
    pub subject: String,
    /// The customer the caller is (the token's customer claim).
    pub customer_id: String,
    /// The token's `scope` holds `orders:admin`.
    pub admin: bool,
}

/// Whose orders a list call reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListScope {
    Customer(String),
    /// Every customer's, newest first (admins only).
    Everyone,
}

/// A caller asked for what is not theirs to ask for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

impl Caller {
    /// The customer a new order belongs to: the caller's own. A body naming
    /// another customer is refused (leaving it out is fine).
    pub fn customer_for_new_order(&self, requested: &str) -> Result<String, Forbidden> {
        if requested.is_empty() || requested == self.customer_id {
            Ok(self.customer_id.clone())
        } else {
            Err(Forbidden(format!(
                "orders are placed for the signed-in customer ({}), not for {requested}",
                self.customer_id
            )))
        }
    }

    /// Whether an order of `owner` is visible to the caller. An order that
    /// is not answers exactly as one that does not exist.
    pub fn may_see(&self, owner: &str) -> bool {
        self.admin || owner == self.customer_id
    }

    /// Whose orders a list of `requested` (maybe empty) reads.
    pub fn list_scope(&self, requested: &str) -> Result<ListScope, Forbidden> {
        if requested.is_empty() {
            return Ok(if self.admin {
                ListScope::Everyone
            } else {
                ListScope::Customer(self.customer_id.clone())
            });
        }
        if requested == self.customer_id || self.admin {
            return Ok(ListScope::Customer(requested.to_owned()));
        }
        Err(Forbidden(format!(
            "only your own orders ({}) can be listed",
            self.customer_id
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(id: &str) -> Caller {
        Caller {
            subject: format!("sub-{id}"),
            customer_id: id.into(),
            admin: false,
        }
    }

    fn admin() -> Caller {
        Caller {
            admin: true,
            ..customer("ops")
        }
    }

    #[test]
    fn orders_are_placed_as_the_caller() {
        let alice = customer("alice");
        assert_eq!(alice.customer_for_new_order("").unwrap(), "alice");
        assert_eq!(alice.customer_for_new_order("alice").unwrap(), "alice");
        assert!(alice.customer_for_new_order("bob").is_err());
        assert!(
            admin().customer_for_new_order("bob").is_err(),
            "not even an admin"
        );
    }

    #[test]
    fn only_owners_and_admins_see_an_order() {
        assert!(customer("alice").may_see("alice"));
        assert!(!customer("bob").may_see("alice"));
        assert!(admin().may_see("alice"));
    }

    #[test]
    fn lists_are_the_callers_own_unless_an_admin_asks() {
        let bob = customer("bob");
        assert_eq!(
            bob.list_scope("").unwrap(),
            ListScope::Customer("bob".into())
        );
        assert_eq!(
            bob.list_scope("bob").unwrap(),
            ListScope::Customer("bob".into())
        );
        assert!(bob.list_scope("alice").is_err());
        assert_eq!(admin().list_scope("").unwrap(), ListScope::Everyone);
        assert_eq!(
            admin().list_scope("alice").unwrap(),
            ListScope::Customer("alice".into())
        );
    }
}
