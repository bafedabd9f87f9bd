//! The history of a run, as Jepsen keeps one: every client operation as an
//! `invoke` and then its completion (`ok`, `fail` when it certainly did not
//! happen, `info` when it may have), and every fault the nemesis injected,
//! in the order they happened.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde_json::json;

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// CreateOrder with an idempotency key.
    Create,
    Cancel,
    /// GetOrder.
    Read,
}

/// How an operation ended, or that it began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Invoke,
    /// Done, with the order as answered.
    Ok,
    /// Certainly not done (the request was refused before it ran).
    Fail,
    /// Maybe done: a timeout, a dropped connection, an unavailable peer.
    Info,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Invoke => "invoke",
            Type::Ok => "ok",
            Type::Fail => "fail",
            Type::Info => "info",
        })
    }
}

/// One entry of the client history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// Milliseconds since the run began.
    pub at_ms: u64,
    pub client: usize,
    pub kind: Kind,
    pub kind_type: Type,
    /// The customer, whose idempotency keys are their own.
    pub customer: String,
    /// The idempotency key (creates), else the order's.
    pub key: String,
    pub order_id: Option<String>,
    /// The order's status as answered (ok only).
    pub status: Option<String>,
    /// The gRPC code and message (fail and info).
    pub error: Option<String>,
}

impl Op {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "at_ms": self.at_ms,
            "process": self.client,
            "f": format!("{:?}", self.kind).to_lowercase(),
            "type": self.kind_type.to_string(),
            "customer": self.customer,
            "key": self.key,
            "order_id": self.order_id,
            "status": self.status,
            "error": self.error,
        })
    }
}

/// One fault, from its start to its end.
#[derive(Clone, Debug)]
pub struct FaultEvent {
    pub started_ms: u64,
    pub ended_ms: u64,
    /// The kind, as the summary counts them ("partition", "kill -9"...).
    pub kind: &'static str,
    /// What exactly: the link, the role, the failpoint.
    pub detail: String,
}

impl FaultEvent {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "at_ms": self.started_ms,
            "process": "nemesis",
            "f": self.kind,
            "value": self.detail,
            "ended_ms": self.ended_ms,
        })
    }
}

/// The history being written by the clients and the nemesis at once.
pub struct History {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    faults: Mutex<Vec<FaultEvent>>,
}

impl History {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            ops: Mutex::default(),
            faults: Mutex::default(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Appends `op`, stamped now.
    pub fn record(&self, mut op: Op) {
        op.at_ms = self.now_ms();
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(op);
    }

    pub fn fault(&self, event: FaultEvent) {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn faults(&self) -> Vec<FaultEvent> {
        self.faults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every entry as a JSON line, clients' and nemesis' merged by time.
    pub fn to_json_lines(&self) -> String {
        let mut lines: Vec<(u64, serde_json::Value)> = self
            .ops()
            .iter()
            .map(|op| (op.at_ms, op.to_json()))
            .chain(self.faults().iter().map(|f| (f.started_ms, f.to_json())))
            .collect();
        lines.sort_by_key(|(at, _)| *at);
        lines
            .into_iter()
            .map(|(_, line)| format!("{line}\n"))
            .collect()
    }
}
