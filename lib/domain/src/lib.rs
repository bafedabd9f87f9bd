//! Domain types more than one service needs. Plain Rust: no transport, no
//! storage.

pub mod error;
pub mod limits;
pub mod money;
pub mod payment_method;
pub mod reasons;

pub use error::{Describe, ErrorDescription, ErrorKind};
pub use money::{Currency, Money, MoneyError};
pub use payment_method::{PaymentMethod, PaymentMethodError, SimulatedOutcome};
