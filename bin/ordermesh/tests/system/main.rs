//! End-to-end tests of the real `ordermesh` binary on loopback: one test

#![allow(clippy::unwrap_used, clippy::expect_used)]
//! binary, one module per feature.

mod harness;

mod browser;
mod canary;
mod chaos;
mod concurrency;
mod curl;
mod envoy;
mod events;
mod events_tail;
mod events_watch;
mod failures;
mod faults;
mod fencing;
mod fronting;
mod gateway;
mod grpc_web;
mod grpcurl;
mod hostile;
mod hostile_edge;
mod idempotency;
mod identity;
mod lifecycle;
mod limits;
mod load;
mod logs;
mod manifests;
mod mesh;
mod observability;
mod orderctl;
mod orders;
mod otlp;
mod overload;
mod partitions;
mod postgres_tls;
mod prices;
mod resume;
mod saga_races;
mod secrets;
mod takeover;
mod validation;
mod workflow;
