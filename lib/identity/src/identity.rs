//! Who the caller is, once their token has been verified.

use std::time::SystemTime;

/// The scope word (in the space-separated `scope` claim) that makes a caller
/// an administrator of every customer's orders.
pub const ADMIN_SCOPE: &str = "orders:admin";

/// A verified caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`: who the issuer says signed in.
    pub subject: String,
    /// The shop's customer id, from the configured claim (`sub` by default).
    pub customer_id: String,
    /// The `scope` claim contains [`ADMIN_SCOPE`].
    pub admin: bool,
    /// The token's `exp`; the verifier accepts it until then plus the leeway.
    pub expires_at: SystemTime,
}
