//! Open watches (server streams), budgeted per client and in total, so a
//! client holding hundreds of streams gets RESOURCE_EXHAUSTED (429 over
//! REST) instead of starving everyone's reads. The gateway and each
//! service keep their own budget; a service behind the gateway tells
//! clients apart by the key the gateway sends (see [`CLIENT_HEADER`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use prometheus::{IntCounter, IntGauge};

use crate::metrics::Metrics;

/// Metadata the gateway sets to the client it serves (token subject, else
/// source address), so the service's budget counts that client rather
/// than the gateway. The gateway never forwards a client's own.
pub const CLIENT_HEADER: &str = "x-ordermesh-client";

/// How long a refused client is told to wait before retrying.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The watch limits, the same flags for the gateway and every service.
#[derive(Clone, Debug, clap::Args)]
pub struct WatchSettings {
    /// Watches one client may hold open at once (per token subject, else
    /// per source address).
    #[arg(long, env = "ORDERMESH_MAX_WATCHES_PER_CLIENT", default_value_t = 16)]
    pub max_watches_per_client: usize,
    /// Watches this process holds open at once, for all clients.
    #[arg(long, env = "ORDERMESH_MAX_WATCHES", default_value_t = 1000)]
    pub max_watches: usize,
}

impl Default for WatchSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

/// Who a served watch is counted against: the client the gateway named,
/// else the subject of the caller's token, else its address.
pub fn served_client_key(headers: &http::HeaderMap, peer: Option<SocketAddr>) -> String {
    if let Some(named) = headers
        .get(CLIENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 256)
    {
        return named.to_owned();
    }
    client_key(bearer_subject(headers).as_deref(), peer)
}

/// The `sub` claim of a bearer JWT, read without checking its signature:
/// here it only picks the budget a watch counts against. The handler
/// verifies the token and refuses the call if it is bad, which gives the
/// place back; a forged subject buys no more than the total budget.
pub fn bearer_subject(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(unverified_subject)
}

fn unverified_subject(authorization: &str) -> Option<String> {
    let token = authorization.strip_prefix("Bearer ")?;
    let payload = token.split('.').nth(1)?;
    if payload.len() > 4096 {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

/// Who a watch is counted against.
pub fn client_key(subject: Option<&str>, peer: Option<SocketAddr>) -> String {
    match (subject, peer) {
        (Some(subject), _) => format!("sub:{subject}"),
        (None, Some(peer)) => format!("ip:{}", peer.ip()),
        (None, None) => "unknown".to_owned(),
    }
}

/// Why a watch was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchRefused {
    PerClient(usize),
    Total(usize),
}

impl std::fmt::Display for WatchRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchRefused::PerClient(limit) => write!(
                f,
                "too many open watches: at most {limit} per client; close one or retry later"
            ),
            WatchRefused::Total(limit) => write!(
                f,
                "the server holds its limit of {limit} open watches; retry later"
            ),
        }
    }
}

impl WatchRefused {
    pub fn into_status(self) -> tonic::Status {
        tonic::Status::resource_exhausted(self.to_string())
    }
}

/// A process's open watches; cheap to clone.
#[derive(Clone, Debug)]
pub struct WatchBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: WatchSettings,
    open: Mutex<Open>,
    gauge: IntGauge,
    refused_per_client: IntCounter,
    refused_total: IntCounter,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<String, usize>,
}

impl WatchBudget {
    /// The budget of `role`, counted in `open_watches` and
    /// `watches_refused_total`.
    pub fn new(settings: &WatchSettings, role: &str, metrics: &Metrics) -> Self {
        let refused = |limit| {
            metrics
                .watches_refused_total
                .with_label_values(&[role, limit])
        };
        Self {
            inner: Arc::new(Inner {
                settings: settings.clone(),
                open: Mutex::default(),
                gauge: metrics.open_watches.with_label_values(&[role]),
                refused_per_client: refused("client"),
                refused_total: refused("total"),
            }),
        }
    }

    /// A place for one more watch of `client`, held until the permit drops.
    pub fn open(&self, client: String) -> Result<WatchPermit, WatchRefused> {
        let settings = &self.inner.settings;
        let mut open = self.lock();
        if open.total >= settings.max_watches {
            self.inner.refused_total.inc();
            return Err(WatchRefused::Total(settings.max_watches));
        }
        let held = open.by_client.entry(client.clone()).or_default();
        if *held >= settings.max_watches_per_client {
            self.inner.refused_per_client.inc();
            return Err(WatchRefused::PerClient(settings.max_watches_per_client));
        }
        *held += 1;
        open.total += 1;
        self.inner.gauge.inc();
        Ok(WatchPermit {
            budget: self.clone(),
            client,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.inner
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One open watch; dropping it (the stream ended or its client left)
/// gives the place back.
#[derive(Debug)]
pub struct WatchPermit {
    budget: WatchBudget,
    client: String,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let mut open = self.budget.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(held) = open.by_client.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                open.by_client.remove(&self.client);
            }
        }
        self.budget.inner.gauge.dec();
    }
}

pin_project_lite::pin_project! {
    /// A watch's response body, holding its place in the budget until it
    /// ends or the client goes away.
    pub struct HeldBody<B> {
        #[pin]
        body: B,
        permit: WatchPermit,
    }
}

impl<B> HeldBody<B> {
    pub fn new(body: B, permit: WatchPermit) -> Self {
        Self { body, permit }
    }
}

impl<B: http_body::Body> http_body::Body for HeldBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_client: usize, total: usize) -> WatchBudget {
        let settings = WatchSettings {
            max_watches_per_client: per_client,
            max_watches: total,
        };
        WatchBudget::new(&settings, "test", &Metrics::new())
    }

    #[test]
    fn a_client_is_held_to_its_share_and_all_to_the_total() {
        let budget = budget(2, 3);
        let a1 = budget.open("a".into()).unwrap();
        let _a2 = budget.open("a".into()).unwrap();
        assert_eq!(
            budget.open("a".into()).unwrap_err(),
            WatchRefused::PerClient(2)
        );
        let _b1 = budget.open("b".into()).unwrap();
        assert_eq!(budget.open("c".into()).unwrap_err(), WatchRefused::Total(3));
        drop(a1);
        let _c1 = budget.open("c".into()).unwrap();
        assert_eq!(budget.inner.gauge.get(), 3);
    }

    #[test]
    fn places_come_back_when_watches_end() {
        let budget = budget(1, 10);
        for _ in 0..100 {
            let permit = budget.open("a".into()).unwrap();
            drop(permit);
        }
        assert!(budget.lock().by_client.is_empty());
        assert_eq!(budget.inner.gauge.get(), 0);
    }

    #[test]
    fn subjects_win_over_addresses() {
        let peer = "127.0.0.9:5000".parse().ok();
        assert_eq!(client_key(Some("alice"), peer), "sub:alice");
        assert_eq!(client_key(None, peer), "ip:127.0.0.9");
    }

    #[test]
    fn a_served_watch_is_counted_against_the_named_client_or_the_token() {
        let peer = "127.0.0.9:5000".parse().ok();
        let mut headers = http::HeaderMap::new();
        assert_eq!(served_client_key(&headers, peer), "ip:127.0.0.9");
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"bob"}"#);
        let bearer = format!("Bearer e30.{payload}.sig");
        headers.insert(http::header::AUTHORIZATION, bearer.parse().unwrap());
        assert_eq!(served_client_key(&headers, peer), "sub:bob");
        headers.insert(CLIENT_HEADER, "ip:10.1.2.3".parse().unwrap());
        assert_eq!(served_client_key(&headers, peer), "ip:10.1.2.3");
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer garbage".parse().unwrap(),
        );
        headers.remove(CLIENT_HEADER);
        assert_eq!(served_client_key(&headers, peer), "ip:127.0.0.9");
    }
}
