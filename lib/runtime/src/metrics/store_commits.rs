//! SQLite's group commit, as metrics: the write transactions each store
//! committed and the COMMITs (fsyncs) that made them durable, read from the
//! stores when `/metrics` is scraped. Their ratio is how many transactions
//! shared an fsync; 1 when writers never queue behind one another.

use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};

/// A store's counts now: (transactions, commits); None when it has none
/// to give (PostgreSQL, SQLite in memory).
type Source = Box<dyn Fn() -> Option<(u64, u64)> + Send + Sync>;

/// `sqlite_transactions_total` and `sqlite_commits_total`, by service.
#[derive(Clone)]
pub struct StoreCommits(Arc<Inner>);

struct Inner {
    transactions: IntCounterVec,
    commits: IntCounterVec,
    sources: Mutex<Vec<(String, Source)>>,
}

impl std::fmt::Debug for StoreCommits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCommits").finish_non_exhaustive()
    }
}

impl StoreCommits {
    pub(super) fn new() -> Self {
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["service"]).expect("a valid metric")
        };
        Self(Arc::new(Inner {
            transactions: counter(
                "sqlite_transactions_total",
                "Write transactions a SQLite store committed, by service.",
            ),
            commits: counter(
                "sqlite_commits_total",
                "COMMITs (each an fsync under synchronous = full) that made them durable; fewer than the transactions when writers shared one, by service.",
            ),
            sources: Mutex::default(),
        }))
    }

    /// Reports `service`'s store from now on; `counts` is read at each scrape.
    pub fn watch(
        &self,
        service: &str,
        counts: impl Fn() -> Option<(u64, u64)> + Send + Sync + 'static,
    ) {
        self.0
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((service.to_owned(), Box::new(counts)));
    }
}

impl Collector for StoreCommits {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.0.transactions.desc();
        descs.extend(self.0.commits.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sources = self
            .0
            .sources
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (service, counts) in sources.iter() {
            if let Some((transactions, commits)) = counts() {
                advance(&self.0.transactions, service, transactions);
                advance(&self.0.commits, service, commits);
            }
        }
        let mut families = self.0.transactions.collect();
        families.extend(self.0.commits.collect());
        families
    }
}

/// Moves a counter up to a store's own count (counters only go up).
fn advance(counter: &IntCounterVec, service: &str, to: u64) {
    let counter = counter.with_label_values(&[service]);
    let now = counter.get();
    if to > now {
        counter.inc_by(to - now);
    }
}
