//! What every ordermesh role shares, so each concern lives in one place:
//! gRPC server wiring ([`grpc`]), outgoing channels ([`client`]), deadline
//! propagation ([`deadline`]), graceful shutdown ([`shutdown`]), logs
//! ([`telemetry`]), traces ([`trace`]), metrics ([`metrics`], served by
//! [`admin`]) and the layer that records them per call ([`instrument`]),
//! settings defaults ([`settings`]) and test-only faults ([`failpoint`]).
//! Metrics, tracers, failpoints and shutdown belong to one App
//! ([`AppContext`]), never to the process: only the log subscriber is global.

pub mod admin;
pub mod client;
pub mod context;
pub mod deadline;
pub mod failpoint;
pub mod grpc;
pub mod instrument;
pub mod listener;
pub mod methods;
pub mod metrics;
pub mod settings;
pub mod shutdown;
pub mod status;
pub mod telemetry;
pub mod trace;
pub mod watches;

pub use context::AppContext;
