//! A PostgreSQL server of a test's own, for tests that stop and start the
//! database or need it configured their way; the machine's shared server at
//! `DATABASE_URL` is for everything else.

use std::process::Command;

/// A PostgreSQL server of the test's own (initdb in a temporary folder), so
/// the test can stop and start it. As root, it runs as the `postgres` user,
/// since PostgreSQL refuses to run as root.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivatePostgres {
    /// A new cluster, started; None (skip) when PostgreSQL is not installed.
    pub fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .or_else(|| crate::missing("PostgreSQL (/usr/lib/postgresql)"))?
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("bin"))
            .find(|bin| bin.join("initdb").is_file())
            .or_else(|| crate::missing("PostgreSQL's initdb"))?;
        let dir = tempfile::tempdir().unwrap();
        if running_as_root() {
            assert!(
                Command::new("chown")
                    .arg("postgres")
                    .arg(dir.path())
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let server = Self {
            dir,
            bin,
            port: free_port(),
        };
        server.pg(
            "initdb",
            &["-D", &server.data(), "-U", "postgres", "--auth=trust"],
        );
        server.up();
        Some(server)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again).
    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }

    /// Stops the server, as an outage would (fast shutdown).
    pub fn down(&self) {
        self.pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// A PostgreSQL tool, as the `postgres` user when running as root.
    fn tool(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn pg(&self, program: &str, args: &[&str]) {
        let output = self
            .tool(program)
            .args(args)
            .output()
            .expect("run a PostgreSQL tool");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// A loopback port free right now, below Linux's ephemeral range (32768
/// and up) so no server binding port 0 elsewhere takes it before the tool
/// that needs it binds it. Only for tools that cannot report the port they
/// bound (PostgreSQL, Prometheus); ordermesh and Envoy bind port 0.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = u16::try_from(std::process::id() % 10_000).unwrap_or(0);
    for _ in 0..1000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed).wrapping_add(seed) % 12_000;
        let port = 20_000 + offset;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}
