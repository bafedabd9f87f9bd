//! The relay's flags: where NATS is, how to authenticate, and the streams'
//! limits. Without `--nats-url` no relay runs and events stay in the outbox
//! (pruned only once published).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// How the services reach NATS JetStream.
#[derive(Clone, Debug, clap::Args)]
pub struct EventSettings {
    /// NATS to publish events to (`nats://host:4222`, `tls://…`; several
    /// servers of one cluster comma-separated). No relay runs without it.
    #[arg(long, env = "ORDERMESH_NATS_URL")]
    pub nats_url: Option<String>,
    /// A NATS credentials file (JWT and NKey seed), as `nats --creds` takes.
    #[arg(long, env = "ORDERMESH_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificates (PEM) to verify the NATS servers with.
    #[arg(long, env = "ORDERMESH_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for mutual TLS; needs `--nats-tls-key`.
    #[arg(long, env = "ORDERMESH_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "ORDERMESH_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// Replicas of each stream the relay creates (1, or 3 on a cluster).
    #[arg(long, env = "ORDERMESH_NATS_STREAM_REPLICAS", default_value_t = 1)]
    pub nats_stream_replicas: usize,
    /// How long a stream the relay creates keeps events.
    #[arg(long, env = "ORDERMESH_NATS_STREAM_MAX_AGE", default_value = "7d", value_parser = humantime::parse_duration)]
    pub nats_stream_max_age: Duration,
    /// Most bytes a stream the relay creates holds (-1: no limit); the
    /// oldest events go first.
    #[arg(long, env = "ORDERMESH_NATS_STREAM_MAX_BYTES", default_value_t = 1 << 30, allow_negative_numbers = true)]
    pub nats_stream_max_bytes: i64,
    /// How long published rows stay in the outbox (for `WatchEvents` and
    /// replays) before they are pruned.
    #[arg(long, env = "ORDERMESH_OUTBOX_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub outbox_retention: Duration,
    /// How often the relay looks for new rows when the last look found none.
    #[arg(long, env = "ORDERMESH_OUTBOX_POLL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub outbox_poll: Duration,
}

impl Default for EventSettings {
    fn default() -> Self {
        ordermesh_runtime::settings::defaults()
    }
}

impl EventSettings {
    /// The client's options: credentials, TLS, and reconnecting for ever
    /// (the relay's own loop backs off between its tries).
    pub(crate) async fn connect_options(
        &self,
        name: &str,
    ) -> anyhow::Result<async_nats::ConnectOptions> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)))
            .max_reconnects(None);
        if let Some(creds) = &self.nats_creds {
            options = options
                .credentials_file(creds)
                .await
                .with_context(|| format!("reading NATS credentials {}", creds.display()))?;
        }
        if let Some(ca) = &self.nats_tls_ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.nats_tls_cert, &self.nats_tls_key) {
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        Ok(options)
    }
}
