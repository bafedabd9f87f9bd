//! Domain types more than one service needs. Plain Rust: no transport, no
//! storage.

pub mod limits;
pub mod money;
pub mod payment_method;

pub use money::{Currency, Money, MoneyError};
pub use payment_method::{PaymentMethod, PaymentMethodError, SimulatedOutcome};
