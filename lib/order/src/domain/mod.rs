//! The order service's rules, in plain Rust: what a valid order is, and how
//! the saga moves from one step to the next. No transport, no storage.

pub mod caller;
pub mod order;
pub mod request;
pub mod saga;

pub use caller::{Caller, Forbidden, ListScope};
pub use order::{FailureReason, OrderLine, OrderStatus, OrderView, Origin, Step};
pub use request::{NewOrder, OrderForm, RequestError};
pub use saga::{Outcome, SagaState};
