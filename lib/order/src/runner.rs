//! Drives orders through the saga: makes each step's call, stores the next
//! state before the next call, and leaves paused sagas to the recovery loop.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use opentelemetry::trace::FutureExt as _;
use ordermesh_runtime::failpoint::{Failpoints, Hit};
use ordermesh_runtime::grpc::BackgroundTask;
use ordermesh_runtime::metrics::Metrics;
use ordermesh_runtime::shutdown::Shutdown;
use ordermesh_storage::now_millis;
use tracing::Instrument;

use crate::domain::{Origin, Step, saga};
use crate::hub::OrderHub;
use crate::peers::Peers;
use crate::store::OrderStore;

#[derive(Clone, Debug)]
pub struct SagaRunner {
    store: OrderStore,
    peers: Peers,
    hub: OrderHub,
    metrics: Arc<Metrics>,
    failpoints: Failpoints,
    /// How long a driver may hold an order before another may take it over.
    lease: Duration,
}

impl SagaRunner {
    pub fn new(
        store: OrderStore,
        peers: Peers,
        hub: OrderHub,
        metrics: Arc<Metrics>,
        failpoints: Failpoints,
        lease: Duration,
    ) -> Self {
        Self {
            store,
            peers,
            hub,
            metrics,
            failpoints,
            lease,
        }
    }

    /// Drives `order_id` in the background.
    /// The saga keeps the caller's trace and log context, so its calls to
    /// inventory and payment join the trace of the request that placed the
    /// order.
    pub fn spawn(&self, order_id: String) {
        let runner = self.clone();
        let drive = async move { runner.drive(&order_id).await };
        tokio::spawn(
            drive
                .with_context(opentelemetry::Context::current())
                .instrument(tracing::Span::current()),
        );
    }

    /// Takes the order's lease and drives it until it is done, pauses for a
    /// retry, or the lease is lost. Does nothing if another driver holds it.
    pub async fn drive(&self, order_id: &str) {
        let owner = uuid::Uuid::now_v7().to_string();
        if let Err(error) = self.drive_as(order_id, &owner).await {
            // The lease runs out by itself; recovery picks the order up again.
            tracing::warn!(order_id, %error, "saga paused: the order store failed");
        }
    }

    async fn drive_as(&self, order_id: &str, owner: &str) -> Result<(), sqlx::Error> {
        let Some(mut order) = self
            .store
            .claim(order_id, owner, now_millis(), self.lease)
            .await?
        else {
            return Ok(());
        };
        loop {
            if order.saga.step == Step::Done {
                return Ok(());
            }
            let outcome = match self.failpoint(order.saga.step).await {
                // A test's failpoint `saga.<step>`: the step fails as if its
                // call had failed so.
                Some(status) => self.peers.failed_step(order.saga.step, &order, &status),
                None => match order.saga.step {
                    Step::Reserve => self.peers.reserve(&order).await,
                    Step::Charge => self.peers.charge(&order).await,
                    Step::Commit => self.peers.commit(&order).await,
                    Step::Compensate => self.peers.compensate(&order).await,
                    Step::Done => return Ok(()),
                },
            };
            let transition = saga::advance(order.saga, outcome);
            let Some(next) = self
                .store
                .advance(
                    &order,
                    owner,
                    &transition.state,
                    transition.retry_in,
                    now_millis(),
                    self.lease,
                )
                .await?
            else {
                tracing::warn!(order_id, "saga lease lost to another driver; stopping");
                return Ok(());
            };
            tracing::info!(
                order_id,
                customer_id = %next.view.customer_id,
                status = %next.view.status,
                step = next.saga.step.as_str(),
                failure_reason = next.view.failure_reason.map(|r| r.as_str()),
                retry_in_ms = transition.retry_in.map(|d| d.as_millis() as u64),
                "saga advanced"
            );
            if !order.view.status.is_terminal() && next.view.status.is_terminal() {
                self.metrics
                    .orders_created_total
                    .with_label_values(&[
                        next.view.status.as_str(),
                        next.view.failure_reason.map_or("none", |r| r.as_str()),
                        Origin::of(&next.view.customer_id).as_str(),
                    ])
                    .inc();
            }
            order = next;
            self.hub.publish(Arc::new(order.clone()));
            if transition.retry_in.is_some() {
                return Ok(());
            }
        }
    }

    /// A test's failpoint on `step` (`saga.reserve`, …): delays it, or says
    /// what status it fails with.
    async fn failpoint(&self, step: Step) -> Option<tonic::Status> {
        if self.failpoints.is_empty() {
            return None;
        }
        let name = format!("saga.{}", step.as_str());
        match self.failpoints.before(&name).await {
            Hit::Pass => None,
            Hit::Fail(code) => Some(tonic::Status::new(code, format!("failpoint {name}"))),
        }
    }

    /// Resumes every unfinished saga that is due, now and every `interval`,
    /// until shutdown: orders left mid-saga by a crash, and paused retries.
    pub fn recovery(&self, interval: Duration, shutdown: Shutdown) -> BackgroundTask {
        let runner = self.clone();
        Box::pin(async move {
            loop {
                match runner.store.due(now_millis(), 256).await {
                    Ok(order_ids) => {
                        if !order_ids.is_empty() {
                            tracing::info!(count = order_ids.len(), "resuming unfinished sagas");
                        }
                        let runner = &runner;
                        futures::stream::iter(order_ids)
                            .for_each_concurrent(16, |order_id| async move {
                                runner.drive(&order_id).await;
                            })
                            .await;
                    }
                    Err(error) => tracing::warn!(%error, "cannot scan for unfinished sagas"),
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        })
    }
}
