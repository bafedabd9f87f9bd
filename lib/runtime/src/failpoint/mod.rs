//! Failpoints: named places where a test can inject a fault into one App.
//! Test-only by documentation, and off unless set: with none set, a
//! failpoint costs one lookup in an empty map.
//!
//! A point is named by what it guards: a served gRPC method by its path
//! (`/ordermesh.payment.v1.PaymentService/ProcessPayment`), a saga step by
//! `saga.reserve`, `saga.charge`, `saga.commit` or `saga.compensate` (a
//! failed step is one whose call failed with that code, without calling).
//! Its action is one of:
//! - `delay(DURATION)`: slow it, e.g. `delay(300ms)`;
//! - `fail(SHARE)` or `fail(SHARE,CODE)`: fail that share of calls before
//!   they run, with UNAVAILABLE or the gRPC code named (`fail(0.3)`,
//!   `fail(1,internal)`);
//! - `lose(COUNT)`: for a served method, lose the response of the next
//!   COUNT calls after the handler ran, as a network cut after the commit
//!   would (hyper resets the stream before any header is sent).
//!
//! Set them with `--failpoint NAME=ACTION` (repeat it) or
//! `ORDERMESH_FAILPOINTS="NAME=ACTION;NAME=ACTION"`; the older
//! `ORDERMESH_FAILPOINT_LOSE_RESPONSES=GRPC_PATH=COUNT` is the same as
//! `GRPC_PATH=lose(COUNT)`. Every time one acts it is logged at WARN and
//! counted in `failpoint_hits_total{failpoint}`, so a test can prove its
//! fault hit.

mod action;
mod layer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use action::{Action, parse_failpoint};
pub use layer::{FailpointLayer, FailpointService};
use prometheus::IntCounterVec;

/// Test-only faults an App may be started with; none by default.
#[derive(Clone, Debug, clap::Args)]
pub struct FailpointSettings {
    /// Test only: a fault at a named point, `NAME=ACTION` (`delay(300ms)`,
    /// `fail(0.3)`, `fail(1,internal)`, `lose(1)`); repeat it, or separate
    /// with `;`.
    #[arg(long = "failpoint", env = "ORDERMESH_FAILPOINTS", value_delimiter = ';', value_parser = parse_failpoint)]
    pub failpoints: Vec<(String, Action)>,
    /// Test only: the same as `--failpoint GRPC_PATH=lose(COUNT)`.
    #[arg(long = "failpoint-lose-responses", env = "ORDERMESH_FAILPOINT_LOSE_RESPONSES", value_parser = action::parse_lose_responses, hide = true)]
    pub lose_responses: Option<(String, Action)>,
}

impl Default for FailpointSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

/// What a failpoint says a call should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    /// Go on as usual.
    Pass,
    /// Fail at once with this code.
    Fail(tonic::Code),
}

/// The failpoints of one App.
#[derive(Clone, Debug, Default)]
pub struct Failpoints {
    points: Arc<HashMap<String, action::Armed>>,
    hits: Option<IntCounterVec>,
}

impl Failpoints {
    /// The points `settings` arm, counting their hits into `hits`.
    pub fn new(settings: &FailpointSettings, hits: IntCounterVec) -> Self {
        let armed: HashMap<String, action::Armed> = settings
            .failpoints
            .iter()
            .chain(&settings.lose_responses)
            .map(|(name, action)| {
                tracing::warn!(failpoint = %name, action = %action, "failpoint armed (test only)");
                (name.clone(), action::Armed::new(*action))
            })
            .collect();
        Self {
            points: Arc::new(armed),
            hits: Some(hits),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    fn counted(&self, name: &str, what: &str) {
        tracing::warn!(failpoint = name, what, "failpoint hit");
        if let Some(hits) = &self.hits {
            hits.with_label_values(&[name]).inc();
        }
    }

    /// Applies `name`'s delay or failure before a call runs.
    pub async fn before(&self, name: &str) -> Hit {
        let Some(point) = self.points.get(name) else {
            return Hit::Pass;
        };
        match point.action() {
            Action::Delay(delay) => {
                self.counted(name, "delay");
                tokio::time::sleep(delay).await;
                Hit::Pass
            }
            Action::Fail { .. } => match point.fails() {
                Some(code) => {
                    self.counted(name, "fail");
                    Hit::Fail(code)
                }
                None => Hit::Pass,
            },
            Action::Lose(_) => Hit::Pass,
        }
    }

    /// Whether `name`'s response is to be lost now (and counts it).
    pub fn lose_now(&self, name: &str) -> bool {
        let lost = self.points.get(name).is_some_and(action::Armed::take_loss);
        if lost {
            self.counted(name, "lose response");
        }
        lost
    }

    /// The delay `name` adds, if any (for code that sleeps itself).
    pub fn delay_of(&self, name: &str) -> Option<Duration> {
        match self.points.get(name)?.action() {
            Action::Delay(delay) => Some(delay),
            _ => None,
        }
    }

    /// The server layer that applies the points named by gRPC paths.
    pub fn layer(&self) -> FailpointLayer {
        FailpointLayer::new(self.clone())
    }
}

#[cfg(test)]
mod tests;
