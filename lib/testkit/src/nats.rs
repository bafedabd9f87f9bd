//! A NATS server of a test's own (`nats-server -js` on a free port with a
//! scratch JetStream store), so the test can stop and start the broker; the
//! machine's shared NATS, if any, is never used.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::postgres::free_port;

/// `nats-server -js` in a temporary folder; stopped when dropped.
pub struct PrivateNats {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl PrivateNats {
    /// A new server on 127.0.0.1, started; None (skip) when nats-server is
    /// not installed (`scripts/install-system-tools.sh` installs it).
    pub fn start() -> Option<Self> {
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
            .or_else(|| crate::missing("nats-server (Debian package nats-server)"))?;
        let mut server = Self {
            dir: tempfile::tempdir().unwrap(),
            bin,
            port: free_port(),
            child: None,
        };
        server.up();
        Some(server)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and store, and waits until
    /// it accepts connections.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let log = std::fs::File::create(self.dir.path().join("nats.log")).unwrap();
        let child = Command::new(&self.bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within 10 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server at once (SIGKILL, as an outage would); its store
    /// stays for the next [`PrivateNats::up`].
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The running server's process id (None while it is down).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.down();
    }
}
