//! What a listener's limits did: counted per listener and reason, and
//! logged at most once a second per listener and reason (with how many were
//! left unlogged), so a thousand slow clients make a handful of lines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::metrics::Metrics;

/// Why a listener closed a connection itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Accepted beyond `--max-connections`.
    OverLimit,
    /// No complete request within `--header-read-timeout` of connecting.
    FirstRequestTimeout,
    /// A request's headers (or, kept alive, the next request's) took longer
    /// than `--header-read-timeout`.
    HeaderTimeout,
    /// Nothing in flight for `--idle-timeout`.
    Idle,
    /// Older than `--max-connection-age`.
    Age,
    /// The client broke the protocol, or HTTP/2's own limits (resets,
    /// header lists) ended the connection.
    ProtocolError,
}

/// Why a listener answered a request itself, before any handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    UriTooLong,
    TooManyHeaders,
}

impl CloseReason {
    const ALL: [CloseReason; 6] = [
        CloseReason::OverLimit,
        CloseReason::FirstRequestTimeout,
        CloseReason::HeaderTimeout,
        CloseReason::Idle,
        CloseReason::Age,
        CloseReason::ProtocolError,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CloseReason::OverLimit => "over_limit",
            CloseReason::FirstRequestTimeout => "first_request_timeout",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::Idle => "idle",
            CloseReason::Age => "age",
            CloseReason::ProtocolError => "protocol_error",
        }
    }

    fn message(self) -> &'static str {
        match self {
            CloseReason::OverLimit => "closed a connection beyond --max-connections",
            CloseReason::FirstRequestTimeout => {
                "closed a connection that sent no request within --header-read-timeout"
            }
            CloseReason::HeaderTimeout => {
                "closed a connection whose request headers took longer than --header-read-timeout"
            }
            CloseReason::Idle => "closed a connection idle for --idle-timeout",
            CloseReason::Age => "closed a connection older than --max-connection-age",
            CloseReason::ProtocolError => "closed a connection that broke the protocol",
        }
    }
}

impl RefuseReason {
    const ALL: [RefuseReason; 2] = [RefuseReason::UriTooLong, RefuseReason::TooManyHeaders];

    fn label(self) -> &'static str {
        match self {
            RefuseReason::UriTooLong => "uri_too_long",
            RefuseReason::TooManyHeaders => "too_many_headers",
        }
    }

    fn message(self) -> &'static str {
        match self {
            RefuseReason::UriTooLong => "refused a request target longer than --max-uri-bytes",
            RefuseReason::TooManyHeaders => {
                "refused a request with more than --max-headers headers"
            }
        }
    }
}

/// One limit's counter and its log throttle.
#[derive(Debug)]
struct Tally {
    counter: IntCounter,
    /// Milliseconds since `Events::started` of the last line logged, plus one
    /// (0: never).
    last_logged: AtomicU64,
    unlogged: AtomicU64,
}

impl Tally {
    fn new(counter: IntCounter) -> Self {
        Self {
            counter,
            last_logged: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }

    /// Counts one; says whether to log it, and how many went unlogged since.
    fn record(&self, started: Instant) -> Option<u64> {
        self.counter.inc();
        let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last_logged.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.unlogged.swap(0, Ordering::Relaxed))
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

const LOG_EVERY: Duration = Duration::from_secs(1);

/// A listener's events; cheap to clone into every connection.
#[derive(Clone, Debug)]
pub struct Events {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    listener: &'static str,
    started: Instant,
    closed: Vec<Tally>,
    refused: Vec<Tally>,
    accept_failures: Tally,
}

impl Events {
    pub fn new(listener: &'static str, metrics: &Metrics) -> Self {
        let closed = CloseReason::ALL
            .iter()
            .map(|reason| {
                Tally::new(
                    metrics
                        .connections_closed_total
                        .with_label_values(&[listener, reason.label()]),
                )
            })
            .collect();
        let refused = RefuseReason::ALL
            .iter()
            .map(|reason| {
                Tally::new(
                    metrics
                        .requests_refused_total
                        .with_label_values(&[listener, reason.label()]),
                )
            })
            .collect();
        let accept_failures = Tally::new(
            metrics
                .connections_closed_total
                .with_label_values(&[listener, "accept_failed"]),
        );
        Self {
            inner: Arc::new(Inner {
                listener,
                started: Instant::now(),
                closed,
                refused,
                accept_failures,
            }),
        }
    }

    pub fn closed(&self, reason: CloseReason, peer: SocketAddr) {
        let index = CloseReason::ALL.iter().position(|r| *r == reason);
        let Some(tally) = index.and_then(|i| self.inner.closed.get(i)) else {
            return;
        };
        if let Some(unlogged) = tally.record(self.inner.started) {
            let listener = self.inner.listener;
            if reason == CloseReason::Age {
                tracing::debug!(role = listener, %peer, "{}", reason.message());
            } else {
                tracing::warn!(role = listener, %peer, also_since_last_line = unlogged, "{}", reason.message());
            }
        }
    }

    pub fn refused(&self, reason: RefuseReason, peer: SocketAddr) {
        let index = RefuseReason::ALL.iter().position(|r| *r == reason);
        let Some(tally) = index.and_then(|i| self.inner.refused.get(i)) else {
            return;
        };
        if let Some(unlogged) = tally.record(self.inner.started) {
            let listener = self.inner.listener;
            tracing::warn!(role = listener, %peer, also_since_last_line = unlogged, "{}", reason.message());
        }
    }

    pub fn accept_failed(&self, error: &std::io::Error) {
        if let Some(unlogged) = self.inner.accept_failures.record(self.inner.started) {
            let listener = self.inner.listener;
            tracing::error!(role = listener, %error, also_since_last_line = unlogged, "cannot accept a connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_logs_once_and_counts_all() {
        let tally = Tally::new(IntCounter::new("t", "t").unwrap());
        let started = Instant::now();
        assert_eq!(tally.record(started), Some(0));
        for _ in 0..99 {
            assert_eq!(tally.record(started), None);
        }
        assert_eq!(tally.counter.get(), 100);
        assert_eq!(tally.unlogged.load(Ordering::Relaxed), 99);
    }
}
