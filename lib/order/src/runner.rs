//! Drives orders through the saga: makes each step's call, stores the next
//! state before the next call, and leaves paused sagas to the recovery loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use opentelemetry::trace::FutureExt as _;
use ordermesh_runtime::failpoint::{Failpoints, Hit};
use ordermesh_runtime::grpc::BackgroundTask;
use ordermesh_runtime::metrics::Metrics;
use ordermesh_runtime::shutdown::Shutdown;
use ordermesh_storage::now_millis;
use tracing::Instrument;

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_util::task::TaskTracker;

use crate::domain::{Origin, Outcome, Step, saga};
use crate::hub::OrderHub;
use crate::peers::Peers;
use crate::store::{FirstDriver, Lease, Leases, OrderStore, StoredOrder};

/// Whether a drive resumed an order from the store (recovery, a takeover)
/// or drives one this process just stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resumed {
    Yes,
    No,
}

#[derive(Clone, Debug)]
pub struct SagaRunner {
    store: OrderStore,
    peers: Peers,
    hub: OrderHub,
    metrics: Arc<Metrics>,
    failpoints: Failpoints,
    /// This process's hold on saga leases.
    leases: Leases,
    /// A test-only shift of this replica's clock, in milliseconds (leases
    /// never read it: they go by the database's clock).
    clock_offset_ms: i64,
    /// Every saga this process drives, drained on shutdown.
    tracker: TaskTracker,
    /// Leases held by a drive of this process (order id → owner), released
    /// on shutdown if their drive did not finish.
    held: Arc<Mutex<HashMap<String, String>>>,
}

impl SagaRunner {
    pub fn new(
        store: OrderStore,
        peers: Peers,
        hub: OrderHub,
        metrics: Arc<Metrics>,
        failpoints: Failpoints,
        leases: Leases,
        clock_offset_ms: i64,
    ) -> Self {
        // Exported from the start, at 0.
        metrics
            .saga_lease_takeovers_total
            .with_label_values::<&str>(&[]);
        metrics
            .saga_oldest_unsettled_age_seconds
            .with_label_values::<&str>(&[]);
        Self {
            store,
            peers,
            hub,
            metrics,
            failpoints,
            leases,
            clock_offset_ms,
            tracker: TaskTracker::new(),
            held: Arc::default(),
        }
    }

    /// This replica's clock (for the times shown on orders).
    fn now(&self) -> i64 {
        now_millis().saturating_add(self.clock_offset_ms)
    }

    /// A new holder name for one drive of one order.
    pub fn new_owner() -> String {
        uuid::Uuid::now_v7().to_string()
    }

    /// What lets [`OrderStore::insert`] store a new order with its lease
    /// taken for `owner`, this process's drive.
    pub fn first_driver<'a>(&'a self, owner: &'a str) -> FirstDriver<'a> {
        FirstDriver {
            owner,
            leases: &self.leases,
        }
    }

    /// Drives `order`, just stored by this process with `lease` taken, in
    /// the background, as [`SagaRunner::spawn`] does.
    pub fn spawn_stored(&self, order: StoredOrder, lease: Lease) {
        let runner = self.clone();
        let drive = async move {
            let order_id = order.view.order_id.clone();
            let owner = lease.owner.clone();
            runner.held_map().insert(order_id.clone(), owner.clone());
            let result = runner.run(order, lease, Resumed::No).await;
            runner.finish(&order_id, &owner, result);
        };
        self.tracker.spawn(
            drive
                .with_context(opentelemetry::Context::current())
                .instrument(tracing::Span::current()),
        );
    }

    /// Drives `order_id` in the background, on the tracked task set.
    /// The saga keeps the caller's trace and log context, so its calls to
    /// inventory and payment join the trace of the request that placed the
    /// order.
    pub fn spawn(&self, order_id: String) {
        let runner = self.clone();
        let drive = async move { runner.drive(&order_id).await };
        self.tracker.spawn(
            drive
                .with_context(opentelemetry::Context::current())
                .instrument(tracing::Span::current()),
        );
    }

    /// Takes the order's lease and drives it until it is done, pauses for a
    /// retry, or the lease is lost. Does nothing if another driver holds it.
    pub async fn drive(&self, order_id: &str) {
        let owner = Self::new_owner();
        let result = self.claim_and_run(order_id, &owner).await;
        self.finish(order_id, &owner, result);
    }

    /// After a drive: a store failure logged, the drive's lease forgotten.
    fn finish(&self, order_id: &str, owner: &str, result: Result<(), sqlx::Error>) {
        if let Err(error) = result {
            // The lease runs out by itself; recovery picks the order up again.
            tracing::warn!(order_id, %error, "saga paused: the order store failed");
        }
        // A drive dropped mid-step (shutdown) leaves its entry, for the
        // hand-over to release.
        let mut held = self.held_map();
        if held.get(order_id).is_some_and(|held_by| held_by == owner) {
            held.remove(order_id);
        }
    }

    fn held_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn claim_and_run(&self, order_id: &str, owner: &str) -> Result<(), sqlx::Error> {
        let Some(claimed) = self.store.claim(order_id, owner, &self.leases).await? else {
            return Ok(());
        };
        if claimed.taken_over {
            self.metrics
                .saga_lease_takeovers_total
                .with_label_values::<&str>(&[])
                .inc();
            tracing::info!(
                order_id,
                fence = claimed.lease.fence,
                "saga lease taken over"
            );
        }
        self.held_map()
            .insert(order_id.to_owned(), owner.to_owned());
        self.run(claimed.order, claimed.lease, Resumed::Yes).await
    }

    /// Drives `order` under `lease`. A forward step that changes nothing
    /// but the step is not stored while the lease has most of its time
    /// left: each step is idempotent, so a drive that resumes the order
    /// repeats it (see [`saga::advance_resumed`]). Every status change,
    /// pause and end is stored before the saga goes on.
    async fn run(
        &self,
        mut order: StoredOrder,
        lease: Lease,
        resumed: Resumed,
    ) -> Result<(), sqlx::Error> {
        let order_id = order.view.order_id.clone();
        let order_id = order_id.as_str();
        let mut renewed = Instant::now();
        loop {
            if order.saga.step == Step::Done {
                return Ok(());
            }
            let fence = lease.fence;
            let outcome = match self.failpoint(order.saga.step).await {
                // A test's failpoint `saga.<step>`: the step fails as if its
                // call had failed so.
                Some(status) => self.peers.failed_step(order.saga.step, &order, &status),
                None => match order.saga.step {
                    Step::Reserve => self.peers.reserve(&order, fence).await,
                    Step::Charge => self.peers.charge(&order, fence).await,
                    Step::Commit => self.peers.commit(&order, fence).await,
                    Step::Compensate => self.peers.compensate(&order, fence).await,
                    Step::Done => return Ok(()),
                },
            };
            if outcome == Outcome::Fenced {
                tracing::warn!(order_id, fence, "a newer holder drives this saga; stopping");
                return Ok(());
            }
            let transition = match resumed {
                Resumed::Yes => saga::advance_resumed(order.saga, outcome),
                Resumed::No => saga::advance(order.saga, outcome),
            };
            if transition.retry_in.is_none()
                && saga::needs_no_record(&order.saga, &transition.state)
                && renewed.elapsed() < self.leases.lease / 3
            {
                order.saga = transition.state;
                continue;
            }
            let Some(next) = self
                .store
                .advance(
                    &order,
                    &lease,
                    &transition.state,
                    transition.retry_in,
                    self.now(),
                    self.leases.lease,
                )
                .await?
            else {
                tracing::warn!(order_id, "saga lease lost to another driver; stopping");
                return Ok(());
            };
            renewed = Instant::now();
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
    /// until shutdown: orders left mid-saga by a crash or by a holder that
    /// went silent, and paused retries. On shutdown, hands over: drains the
    /// sagas in flight for at most `grace`, releases the leases still held
    /// and retires this holder, so another replica takes over at once.
    pub fn recovery(
        &self,
        interval: Duration,
        grace: Duration,
        shutdown: Shutdown,
    ) -> BackgroundTask {
        let runner = self.clone();
        Box::pin(async move {
            loop {
                let scan = async {
                    match runner.store.due(&runner.leases, 256).await {
                        Ok(order_ids) => {
                            if !order_ids.is_empty() {
                                tracing::info!(
                                    count = order_ids.len(),
                                    "resuming unfinished sagas"
                                );
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
                    tokio::time::sleep(interval).await;
                };
                tokio::select! {
                    () = scan => {}
                    () = shutdown.cancelled() => break,
                }
            }
            runner.hand_over(grace).await;
        })
    }

    /// Heartbeats this holder every `interval` until shutdown, and publishes
    /// the age of the oldest unsettled saga.
    pub fn heartbeat(&self, interval: Duration, shutdown: Shutdown) -> BackgroundTask {
        let runner = self.clone();
        let started = now_millis();
        Box::pin(async move {
            // Never after shutdown started: the hand-over retires this
            // holder, and a late heartbeat would bring it back to life.
            while !shutdown.is_triggered() {
                if let Err(error) = runner.store.heartbeat(&runner.leases.holder, started).await {
                    tracing::warn!(%error, "cannot record this holder's heartbeat");
                }
                match runner.store.oldest_unsettled_age_ms().await {
                    Ok(age_ms) => runner
                        .metrics
                        .saga_oldest_unsettled_age_seconds
                        .with_label_values::<&str>(&[])
                        .set(age_ms / 1000),
                    Err(error) => tracing::warn!(%error, "cannot read the oldest unsettled saga"),
                }
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        })
    }

    async fn hand_over(&self, grace: Duration) {
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                sagas = self.tracker.len(),
                "sagas still in flight after the grace period; handing their leases over"
            );
        }
        let held: Vec<(String, String)> = self.held_map().drain().collect();
        for (order_id, owner) in &held {
            if let Err(error) = self.store.release(order_id, owner).await {
                tracing::warn!(order_id, %error, "cannot release a saga lease");
            }
        }
        if let Err(error) = self.store.retire(&self.leases.holder).await {
            tracing::warn!(%error, "cannot retire this lease holder");
        }
        tracing::info!(released = held.len(), "saga leases handed over");
    }
}
