//! Events leave the services through their transactional outboxes
//! (`ordermesh_storage::outbox`); this crate's relay publishes them to NATS
//! JetStream (docs/events.md). Nothing here is called from a request
//! handler: the relay is a role's background task.

pub mod relay;
mod settings;
pub mod watch;

pub use relay::{ORDERS, Relay, STOCK, StreamSpec, TYPE_HEADER};
pub use settings::EventSettings;
pub use watch::EventWatch;
