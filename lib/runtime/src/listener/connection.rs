//! One accepted connection: hyper serves it, and a watchdog beside it
//! closes it when a limit hyper does not keep is reached (no first request,
//! idle, too old) or when the listener drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use prometheus::IntGauge;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::{CloseReason, Events};
use super::request::{Activity, PerConnection};
use super::{ConnectionSettings, Protocols};

/// HTTP/2 streams a client may open and reset before the server answers
/// (the rapid-reset attack); beyond it, h2 ends the connection.
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
/// Streams the server itself may reset for a client's errors before it
/// ends the connection.
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 256;

/// The limits of a listener's connections, with the hyper builder they set.
#[derive(Clone)]
pub struct Limits {
    builder: auto::Builder<TokioExecutor>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connection_age: Option<Duration>,
    pub max_uri_bytes: usize,
    pub max_headers: usize,
}

impl Limits {
    pub fn new(settings: &ConnectionSettings, protocols: Protocols) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            .max_headers(settings.max_headers)
            // hyper's buffer must hold the whole request head; it refuses
            // a larger one with 431. Its floor is 8 KiB.
            .max_buf_size(settings.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(settings.http2_keepalive_interval)
            .keep_alive_timeout(settings.http2_keepalive_timeout)
            .max_concurrent_streams(settings.max_concurrent_streams)
            .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS);
        if protocols == Protocols::Http2Only {
            builder = builder.http2_only();
        }
        Self {
            builder,
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.idle_timeout,
            max_connection_age: settings.max_connection_age,
            max_uri_bytes: settings.max_uri_bytes,
            max_headers: settings.max_headers,
        }
    }
}

/// What one connection needs from its listener.
pub struct Connection {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub open: IntGauge,
    pub limits: Arc<Limits>,
    pub events: Events,
    /// Fired when the listener drains: finish what is in flight, then close.
    pub finish: CancellationToken,
    /// Fired when the drain's grace is over: close now.
    pub close: CancellationToken,
}

/// Holds one unit of the listener's open-connections gauge.
struct Counted(IntGauge);

impl Counted {
    fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What the watchdog decided.
enum Verdict {
    /// Ask the connection to finish (HTTP/2 GOAWAY; HTTP/1.1 closes after
    /// the response in progress).
    Finish(Option<CloseReason>),
    /// Drop it now.
    Close(CloseReason),
}

impl Connection {
    pub async fn serve<S, B>(self, stream: TcpStream, service: S)
    where
        S: tower::Service<http::Request<Incoming>, Response = http::Response<B>>
            + Clone
            + Send
            + 'static,
        S::Error: Into<tower::BoxError>,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<tower::BoxError>,
    {
        let _counted = Counted::new(self.open.clone());
        let opened = Instant::now();
        let activity = Activity::new();
        let per_connection = PerConnection::new(
            service,
            self.peer,
            self.local,
            self.limits.clone(),
            self.events.clone(),
            activity.clone(),
        );
        let connection = self
            .limits
            .builder
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(per_connection),
            )
            .into_owned();
        tokio::pin!(connection);
        let mut finishing = false;
        loop {
            let verdict = tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        self.report(&error, activity.served());
                    }
                    return;
                }
                () = self.close.cancelled() => return,
                () = self.finish.cancelled(), if !finishing => Verdict::Finish(None),
                () = activity.changed() => continue,
                () = tokio::time::sleep_until(self.next_check(opened, &activity)), if !finishing => {
                    match self.judge(opened, &activity) {
                        Some(verdict) => verdict,
                        None => continue,
                    }
                }
            };
            match verdict {
                Verdict::Close(reason) => {
                    self.events.closed(reason, self.peer);
                    return;
                }
                Verdict::Finish(reason) => {
                    if let Some(reason) = reason {
                        self.events.closed(reason, self.peer);
                    }
                    connection.as_mut().graceful_shutdown();
                    finishing = true;
                }
            }
        }
    }

    /// When a limit could next be reached.
    fn next_check(&self, opened: Instant, activity: &Activity) -> Instant {
        let limits = &self.limits;
        let mut next = if !activity.served() {
            opened + limits.header_read_timeout
        } else if let Some(idle_since) = activity.idle_since() {
            idle_since + limits.idle_timeout
        } else {
            // Busy: nothing but age can end it; `changed` wakes us when it
            // goes idle.
            Instant::now() + limits.idle_timeout
        };
        if let Some(age) = limits.max_connection_age {
            next = next.min(opened + age);
        }
        next
    }

    fn judge(&self, opened: Instant, activity: &Activity) -> Option<Verdict> {
        let limits = &self.limits;
        let now = Instant::now();
        if !activity.served() && now >= opened + limits.header_read_timeout {
            // Not a single request: an HTTP/2 client that never finished
            // its first headers, or one that sent nothing at all.
            return Some(Verdict::Close(CloseReason::FirstRequestTimeout));
        }
        if activity
            .idle_since()
            .is_some_and(|since| activity.served() && now >= since + limits.idle_timeout)
        {
            return Some(Verdict::Finish(Some(CloseReason::Idle)));
        }
        if limits
            .max_connection_age
            .is_some_and(|age| now >= opened + age)
        {
            return Some(Verdict::Finish(Some(CloseReason::Age)));
        }
        None
    }

    /// Counts the errors that are a client's doing; a client that simply
    /// went away is not one.
    fn report(&self, error: &tower::BoxError, served: bool) {
        let Some(hyper_error) = find::<hyper::Error>(error.as_ref()) else {
            // auto's own errors: a preface that is neither HTTP/1 nor 2.
            if find::<std::io::Error>(error.as_ref()).is_none() {
                self.events.closed(CloseReason::ProtocolError, self.peer);
            }
            return;
        };
        if hyper_error.is_timeout() {
            let reason = if served {
                CloseReason::HeaderTimeout
            } else {
                CloseReason::FirstRequestTimeout
            };
            self.events.closed(reason, self.peer);
        } else if hyper_error.is_parse() || hyper_error.is_user() || is_h2_protocol(hyper_error) {
            self.events.closed(CloseReason::ProtocolError, self.peer);
        } else {
            tracing::debug!(peer = %self.peer, %error, "connection ended with an error");
        }
    }
}

/// An HTTP/2 connection error of the client's making (a GOAWAY h2 sent for
/// too many resets, a header list too large, a bad frame) rather than an
/// I/O error.
fn is_h2_protocol(error: &hyper::Error) -> bool {
    use std::error::Error as _;
    let mut source = error.source();
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return false;
        }
        source = cause.source();
    }
    // hyper reports h2's own errors with a source it does not export; an
    // error with no I/O cause that is not a closed or cancelled stream is
    // the protocol's.
    !(error.is_closed() || error.is_canceled() || error.is_incomplete_message())
        && error.source().is_some()
}

fn find<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<E>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}
