//! One shutdown signal for a whole process: SIGTERM or Ctrl-C cancels a token
//! that every server and background task watches.

use tokio_util::sync::CancellationToken;

/// A cloneable handle: `trigger` starts shutdown, `cancelled` waits for it.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts shutdown everywhere this handle was cloned.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Resolves once shutdown has started.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Triggers shutdown on the first SIGTERM or Ctrl-C.
    pub fn trigger_on_signal(&self) {
        let shutdown = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; draining");
            shutdown.trigger();
        });
    }
}

/// Resolves on the first SIGTERM or Ctrl-C.
pub async fn signal() {
    wait_for_signal().await;
    tracing::info!("shutdown signal received; draining");
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
