//! The system in-process: [`TestApp::spawn`] builds an `App` on loopback
//! port 0 on a database of the test's own and serves it on the test's
//! runtime, as zero-to-production's `spawn_app` does. Tests talk to it over
//! the network like any client; each App has its own metrics, so tests in
//! one binary never see each other's figures.

use std::net::SocketAddr;
use std::sync::Arc;

use ordermesh_app::{App, AppSettings, BoundAddrs, Role};
use ordermesh_runtime::metrics::Metrics;
use ordermesh_runtime::shutdown::Shutdown;
use tokio::task::JoinHandle;

use crate::TestDatabase;

/// A running App, stopped when dropped.
pub struct TestApp {
    addrs: BoundAddrs,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    settings: AppSettings,
    database: Arc<TestDatabase>,
}

impl TestApp {
    /// Every role on a fresh SQLite directory, every setting at its default.
    pub async fn sqlite() -> Self {
        Self::spawn(Arc::new(TestDatabase::sqlite()), |_| {}).await
    }

    /// Every role on `database`, with `configure` applied to the settings.
    pub async fn spawn(
        database: Arc<TestDatabase>,
        configure: impl FnOnce(&mut AppSettings),
    ) -> Self {
        Self::spawn_roles(database, &Role::ALL, configure).await
    }

    /// Only `roles` on `database`; peers outside the App are called at the
    /// URLs `configure` sets.
    pub async fn spawn_roles(
        database: Arc<TestDatabase>,
        roles: &[Role],
        configure: impl FnOnce(&mut AppSettings),
    ) -> Self {
        let mut settings = AppSettings::loopback(roles, database.settings().clone());
        // Tokens from the test issuer (`crate::tokens`) verify; a test of
        // the development issuer sets `settings.identity` back to it.
        settings.identity = crate::tokens::settings();
        configure(&mut settings);
        Self::start(settings, database).await
    }

    async fn start(settings: AppSettings, database: Arc<TestDatabase>) -> Self {
        let app = App::build(settings.clone())
            .await
            .unwrap_or_else(|error| panic!("the App builds: {error:#}"));
        let addrs = app.addrs();
        let metrics = app.metrics().clone();
        let shutdown = app.shutdown_handle();
        let task = tokio::spawn(app.run_until(std::future::pending()));
        Self {
            addrs,
            metrics,
            shutdown,
            task: Some(task),
            settings,
            database,
        }
    }

    /// The address of `role`; panics if this App does not run it.
    pub fn addr(&self, role: Role) -> SocketAddr {
        self.addrs
            .of(role)
            .unwrap_or_else(|| panic!("this App does not run {}", role.name()))
    }

    /// `http://ADDR` of `role`.
    pub fn url(&self, role: Role) -> String {
        format!("http://{}", self.addr(role))
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.addrs.admin
    }

    /// This App's metrics registry (what its `/metrics` serves).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn database(&self) -> &Arc<TestDatabase> {
        &self.database
    }

    pub fn settings(&self) -> &AppSettings {
        &self.settings
    }

    /// Shuts the App down as SIGTERM would and waits for it to drain.
    pub async fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            task.await
                .expect("the App task ends")
                .unwrap_or_else(|error| panic!("the App stops cleanly: {error:#}"));
        }
    }

    /// Stops the App without draining (its tasks are dropped mid-call, as
    /// far as a process can do in-process; use a real process for kill -9).
    pub fn abort(&mut self) {
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Stops the App and starts it again on the same database and settings
    /// (new ports).
    pub async fn restart(&mut self) {
        self.stop().await;
        let restarted = Self::start(self.settings.clone(), self.database.clone()).await;
        *self = restarted;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}
