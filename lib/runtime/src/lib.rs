//! What every ordermesh role shares, so each concern lives in one place:
//! gRPC server wiring ([`grpc`]), outgoing channels ([`client`]), deadline
//! propagation ([`deadline`]), graceful shutdown ([`shutdown`]) and logging
//! ([`telemetry`]).

pub mod client;
pub mod deadline;
pub mod grpc;
pub mod shutdown;
pub mod status;
pub mod telemetry;
