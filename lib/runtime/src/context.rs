//! What the roles of one App share, made once per App and never global:
//! its metrics registry, its tracers, its failpoints and its shutdown
//! signal. Two Apps in one test binary never see each other's figures.

use std::sync::Arc;

use opentelemetry_sdk::trace::Tracer;

use crate::failpoint::{FailpointSettings, Failpoints};
use crate::methods::KnownMethods;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::trace::{TraceSettings, Tracers};

#[derive(Clone, Debug)]
pub struct AppContext {
    metrics: Arc<Metrics>,
    tracers: Tracers,
    failpoints: Failpoints,
    shutdown: Shutdown,
    methods: KnownMethods,
}

impl AppContext {
    /// A fresh context. `single_role` says whether the App runs one role
    /// (then `OTEL_SERVICE_NAME` may rename it) or several.
    pub fn new(trace: &TraceSettings, single_role: bool, failpoints: &FailpointSettings) -> Self {
        let metrics = Arc::new(Metrics::new());
        Self {
            failpoints: Failpoints::new(failpoints, metrics.failpoint_hits_total.clone()),
            metrics,
            tracers: Tracers::new(trace.clone(), single_role),
            shutdown: Shutdown::new(),
            methods: KnownMethods::builtin(),
        }
    }

    /// A context with nothing exported and no failpoint, for tests.
    pub fn for_tests() -> Self {
        Self::new(
            &TraceSettings::default(),
            false,
            &FailpointSettings::default(),
        )
    }

    /// The gRPC methods this App names in its metrics and spans.
    pub fn methods(&self) -> &KnownMethods {
        &self.methods
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The tracer of `role`, made on first use.
    pub fn tracer(&self, role: &'static str) -> Tracer {
        self.tracers.tracer(role)
    }

    pub fn tracers(&self) -> &Tracers {
        &self.tracers
    }

    pub fn failpoints(&self) -> &Failpoints {
        &self.failpoints
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }
}
