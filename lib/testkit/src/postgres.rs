//! A PostgreSQL server of a test's own, for tests that stop and start the
//! database or need it configured their way; the machine's shared server at
//! `DATABASE_URL` is for everything else.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;

use crate::hosts::Host;

/// A PostgreSQL server of the test's own (initdb in a temporary folder), so
/// the test can stop and start it. As root, it runs as the `postgres` user,
/// since PostgreSQL refuses to run as root.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    addr: IpAddr,
    port: u16,
    /// The host's namespace it runs in, if any.
    netns: Option<String>,
}

impl PrivatePostgres {
    /// A new cluster on 127.0.0.1, started; None (skip) when PostgreSQL is
    /// not installed.
    pub fn start() -> Option<Self> {
        Self::start_on(Ipv4Addr::LOCALHOST.into(), free_port(), None, None, None)
    }

    /// A new cluster on 127.0.0.1 that takes TCP connections over TLS only
    /// (`hostssl` in pg_hba.conf), with `tls`'s certificate chain and key
    /// (PEM); None (skip) when PostgreSQL is not installed.
    pub fn start_with_tls(tls: &ServerTls) -> Option<Self> {
        Self::start_on(
            Ipv4Addr::LOCALHOST.into(),
            free_port(),
            None,
            None,
            Some(tls),
        )
    }

    /// A new cluster inside `host`, listening on the host's address (port
    /// 5432: the address is the host's alone), open to the whole subnet;
    /// None (skip) when PostgreSQL is not installed.
    pub fn start_in(host: &Host) -> Option<Self> {
        let port = match host.netns() {
            Some(_) => 5432,
            // The runner's address is the root namespace's, shared with
            // whatever else runs on this machine.
            None => free_port(),
        };
        let subnet = host.subnet().to_string();
        Self::start_on(
            host.addr().into(),
            port,
            host.netns().map(str::to_owned),
            Some(&subnet),
            None,
        )
    }

    /// As [`PrivatePostgres::start_in`], taking TCP clients over TLS only,
    /// with `tls`'s certificate chain and key (PEM).
    pub fn start_in_with_tls(host: &Host, tls: &ServerTls) -> Option<Self> {
        let subnet = host.subnet().to_string();
        Self::start_on(
            host.addr().into(),
            5432,
            host.netns().map(str::to_owned),
            Some(&subnet),
            Some(tls),
        )
    }

    /// `trusted`: a network (CIDR) whose clients may connect without a
    /// password, besides loopback (initdb's default).
    fn start_on(
        addr: IpAddr,
        port: u16,
        netns: Option<String>,
        trusted: Option<&str>,
        tls: Option<&ServerTls>,
    ) -> Option<Self> {
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
            addr,
            port,
            netns,
        };
        server.pg(
            "initdb",
            &["-D", &server.data(), "-U", "postgres", "--auth=trust"],
        );
        if let Some(trusted) = trusted {
            let hba = std::path::Path::new(&server.data()).join("pg_hba.conf");
            let mut file = std::fs::OpenOptions::new().append(true).open(&hba).unwrap();
            writeln!(file, "host all all {trusted} trust").unwrap();
        }
        if let Some(tls) = tls {
            server.use_tls(tls, trusted);
        }
        server.up();
        Some(server)
    }

    /// Turns TLS on and refuses TCP clients that do not use it, loopback's
    /// and `trusted`'s alike.
    fn use_tls(&self, tls: &ServerTls, trusted: Option<&str>) {
        let data = std::path::Path::new(&self.data()).to_path_buf();
        std::fs::write(data.join("server.crt"), &tls.cert_chain).unwrap();
        std::fs::write(data.join("server.key"), &tls.key).unwrap();
        let mut hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n".to_owned();
        if let Some(trusted) = trusted {
            hba.push_str(&format!("hostssl all all {trusted} trust\n"));
        }
        std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        writeln!(conf, "ssl = on").unwrap();
        writeln!(conf, "ssl_cert_file = 'server.crt'").unwrap();
        writeln!(conf, "ssl_key_file = 'server.key'").unwrap();
        // PostgreSQL refuses a key others may read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            data.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        if running_as_root() {
            for file in ["server.crt", "server.key", "pg_hba.conf"] {
                assert!(
                    Command::new("chown")
                        .arg("postgres")
                        .arg(data.join(file))
                        .status()
                        .unwrap()
                        .success()
                );
            }
        }
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// The URL of its `postgres` database, at its address.
    pub fn url(&self) -> String {
        format!("postgres://postgres@{}:{}/postgres", self.addr, self.port)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path of one of this PostgreSQL's programs (`psql`, `pg_isready`),
    /// to run as a client, from a host for instance.
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Starts the server (again), in its host's namespace if it has one.
    pub fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses={} -c max_connections=200",
            self.port,
            self.dir.path().display(),
            self.addr
        );
        let log = self.dir.path().join("log").display().to_string();
        run(
            self.in_netns("pg_ctl"),
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

    /// Stops the server, as an outage would (fast shutdown). Stopping only
    /// signals the pid in postmaster.pid, so it needs no namespace.
    pub fn down(&self) {
        self.pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// A PostgreSQL tool, as the `postgres` user when running as root.
    fn tool(&self, program: &str) -> Command {
        self.tool_in(None, program)
    }

    /// As [`PrivatePostgres::tool`], in the server's namespace.
    fn in_netns(&self, program: &str) -> Command {
        self.tool_in(self.netns.as_deref(), program)
    }

    fn tool_in(&self, netns: Option<&str>, program: &str) -> Command {
        let program = self.bin.join(program);
        let root = running_as_root();
        let first = if root {
            "runuser".into()
        } else {
            program.clone()
        };
        let mut command = match netns {
            Some(netns) => crate::process::netns_command(netns, first),
            None => Command::new(first),
        };
        if root {
            command.args(["-u", "postgres", "--"]).arg(program);
        }
        command
    }

    fn pg(&self, program: &str, args: &[&str]) {
        run(self.tool(program), args);
    }
}

/// A server's certificate chain and private key, PEM.
pub struct ServerTls {
    pub cert_chain: Vec<u8>,
    pub key: Vec<u8>,
}

fn run(mut command: Command, args: &[&str]) {
    let output = command.args(args).output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
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
