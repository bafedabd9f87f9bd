//! The load engine: fixed rate (open loop) or fixed concurrency (closed
//! loop), for a bounded time, with a progress bar.
//!
//! Open loop: request `i` is due at `start + i / rate`, whether or not the
//! earlier ones have answered, and its latency is measured from that due
//! time, so a server that falls behind shows its queueing in the latency
//! instead of quietly slowing the generator down (coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::time::Instant;

use crate::stats::{Outcome, Recorder, Report};

/// Numbers every request this process sends, across runs: a warm-up and
/// the run after it never share a number, so never an idempotency key.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Something that sends one request of a workload. `seq` numbers the
/// request (unique in the process), so a workload can vary its requests
/// deterministically and key them uniquely.
pub trait Driver: Send + Sync + 'static {
    fn call(&self, seq: u64) -> BoxFuture<'static, Outcome>;
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// A new request every 1/rate seconds.
    Open { rate: f64 },
    /// `concurrency` clients, each sending its next request when the last
    /// one answers.
    Closed { concurrency: usize },
    /// As `Closed`, until `requests` have been sent (or the duration ends):
    /// a fixed amount of work, to charge the servers' CPU to.
    Count { concurrency: usize, requests: u64 },
}

impl Mode {
    pub fn describe(&self) -> String {
        match self {
            Mode::Open { rate } => format!("open {rate:.0}/s"),
            Mode::Closed { concurrency } => format!("closed c={concurrency}"),
            Mode::Count {
                concurrency,
                requests,
            } => format!("count {requests} c={concurrency}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub mode: Mode,
    pub duration: Duration,
    /// A request not answered within this is counted as `timeout`.
    pub timeout: Duration,
    /// Open loop only: due requests beyond this many in flight are dropped
    /// (counted as `dropped`), so a stalled server cannot exhaust memory.
    pub max_in_flight: usize,
    pub progress: bool,
}

/// Runs `spec` against `driver` and reports.
pub async fn run(driver: Arc<dyn Driver>, spec: &Spec) -> anyhow::Result<Report> {
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(spec, completed.clone(), failed.clone());
    let started = Instant::now();
    let recorder = match spec.mode {
        Mode::Open { rate } => open_loop(driver, spec, rate, &completed, &failed).await?,
        Mode::Closed { concurrency } => {
            closed_loop(driver, spec, concurrency, u64::MAX, &completed, &failed).await?
        }
        Mode::Count {
            concurrency,
            requests,
        } => closed_loop(driver, spec, concurrency, requests, &completed, &failed).await?,
    };
    let elapsed = started.elapsed();
    if let Some((bar, ticker)) = bar {
        ticker.abort();
        bar.finish_and_clear();
    }
    Ok(recorder.report(&spec.name, &spec.mode.describe(), elapsed))
}

async fn call_with_timeout(driver: &dyn Driver, seq: u64, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, driver.call(seq)).await {
        Ok(outcome) => outcome,
        Err(_) => Err("timeout".to_owned()),
    }
}

async fn closed_loop(
    driver: Arc<dyn Driver>,
    spec: &Spec,
    concurrency: usize,
    limit: u64,
    completed: &Arc<AtomicU64>,
    failed: &Arc<AtomicU64>,
) -> anyhow::Result<Recorder> {
    let deadline = Instant::now() + spec.duration;
    // Requests taken so far, shared: the workers stop at `limit` in all.
    let taken = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (driver, completed, failed) = (driver.clone(), completed.clone(), failed.clone());
        let taken = taken.clone();
        let timeout = spec.timeout;
        let mut recorder = Recorder::new()?;
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline && taken.fetch_add(1, Ordering::Relaxed) < limit {
                let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let outcome = call_with_timeout(driver.as_ref(), seq, timeout).await;
                recorder.record(sent.elapsed(), &outcome);
                completed.fetch_add(1, Ordering::Relaxed);
                if outcome.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            recorder
        }));
    }
    let mut total = Recorder::new()?;
    for worker in workers {
        total.merge(&worker.await?)?;
    }
    Ok(total)
}

async fn open_loop(
    driver: Arc<dyn Driver>,
    spec: &Spec,
    rate: f64,
    completed: &Arc<AtomicU64>,
    failed: &Arc<AtomicU64>,
) -> anyhow::Result<Recorder> {
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "the rate must be positive, got {rate}"
    );
    // Shards keep the completing tasks from contending on one lock.
    const SHARDS: usize = 16;
    let shards: Arc<Vec<std::sync::Mutex<Recorder>>> = Arc::new(
        (0..SHARDS)
            .map(|_| Recorder::new().map(std::sync::Mutex::new))
            .collect::<anyhow::Result<_>>()?,
    );
    let in_flight = Arc::new(AtomicUsize::new(0));
    let total = (rate * spec.duration.as_secs_f64()).round() as u64;
    let first = SEQUENCE.fetch_add(total, Ordering::Relaxed);
    let start = Instant::now();
    let mut dropped = 0u64;
    for i in 0..total {
        let seq = first + i;
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        if in_flight.load(Ordering::Relaxed) >= spec.max_in_flight {
            dropped += 1;
            completed.fetch_add(1, Ordering::Relaxed);
            failed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (driver, shards, in_flight, completed, failed) = (
            driver.clone(),
            shards.clone(),
            in_flight.clone(),
            completed.clone(),
            failed.clone(),
        );
        let timeout = spec.timeout;
        tokio::spawn(async move {
            let outcome = call_with_timeout(driver.as_ref(), seq, timeout).await;
            // From the due time, not the send time: queueing counts.
            let latency = due.elapsed();
            if let Ok(mut shard) = shards[seq as usize % SHARDS].lock() {
                shard.record(latency, &outcome);
            }
            completed.fetch_add(1, Ordering::Relaxed);
            if outcome.is_err() {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Every request carries its own timeout, so the stragglers end by then.
    let drain_until = Instant::now() + spec.timeout + Duration::from_millis(200);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut merged = Recorder::new()?;
    for shard in shards.iter() {
        let shard = shard
            .lock()
            .map_err(|_| anyhow::anyhow!("a recording task panicked"))?;
        merged.merge(&shard)?;
    }
    for _ in 0..dropped {
        merged.count_error("dropped");
    }
    for _ in 0..in_flight.load(Ordering::Relaxed) {
        merged.count_error("unfinished");
    }
    Ok(merged)
}

/// A bar over the run's duration showing requests and errors so far (only
/// when stderr is a terminal; indicatif draws nothing otherwise).
fn progress_bar(
    spec: &Spec,
    completed: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> Option<(ProgressBar, tokio::task::JoinHandle<()>)> {
    if !spec.progress {
        return None;
    }
    let total_ms = u64::try_from(spec.duration.as_millis()).unwrap_or(u64::MAX);
    let bar = ProgressBar::new(total_ms);
    let style = ProgressStyle::with_template(
        "{prefix:>28} [{bar:30.cyan/blue}] {elapsed:>3} / {len_s} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style.with_key(
        "len_s",
        move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}s", total_ms as f64 / 1000.0);
        },
    ));
    bar.set_prefix(format!("{} [{}]", spec.name, spec.mode.describe()));
    let ticking = bar.clone();
    let started = Instant::now();
    let ticker = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(200));
        loop {
            interval.tick().await;
            let elapsed = started.elapsed();
            let done = completed.load(Ordering::Relaxed);
            let errors = failed.load(Ordering::Relaxed);
            let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
            ticking.set_position(
                u64::try_from(elapsed.as_millis())
                    .unwrap_or(u64::MAX)
                    .min(total_ms),
            );
            ticking.set_message(format!("{done} req, {rate:.0}/s, {errors} errors"));
        }
    });
    Some((bar, ticker))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers at once; every tenth request fails.
    struct Instant10;

    impl Driver for Instant10 {
        fn call(&self, seq: u64) -> BoxFuture<'static, Outcome> {
            Box::pin(async move {
                if seq % 10 == 9 {
                    Err("grpc Internal".to_owned())
                } else {
                    Ok(())
                }
            })
        }
    }

    fn spec(mode: Mode) -> Spec {
        Spec {
            name: "smoke".into(),
            mode,
            duration: Duration::from_millis(200),
            timeout: Duration::from_secs(1),
            max_in_flight: 1000,
            progress: false,
        }
    }

    #[tokio::test]
    async fn open_loop_sends_rate_times_duration_requests() {
        let report = run(Arc::new(Instant10), &spec(Mode::Open { rate: 500.0 }))
            .await
            .unwrap();
        // 500/s for 0.2 s: exactly 100 requests, one in ten failing.
        assert_eq!(report.requests, 100);
        assert_eq!(report.errors["grpc Internal"], 10);
        assert_eq!(report.mode, "open 500/s");
    }

    #[tokio::test]
    async fn closed_loop_counts_every_request() {
        let report = run(Arc::new(Instant10), &spec(Mode::Closed { concurrency: 4 }))
            .await
            .unwrap();
        assert!(report.requests > 0);
        assert_eq!(report.requests, report.ok + report.error_count());
        assert_eq!(report.mode, "closed c=4");
    }

    #[tokio::test]
    async fn a_counted_run_sends_exactly_its_count() {
        let mode = Mode::Count {
            concurrency: 7,
            requests: 250,
        };
        let report = run(Arc::new(Instant10), &spec(mode)).await.unwrap();
        assert_eq!(report.requests, 250);
        // Which requests fail depends on the process-wide sequence, which
        // the other tests share: only the total is exact.
        assert_eq!(report.ok + report.error_count(), 250);
        assert_eq!(report.mode, "count 250 c=7");
    }
}
