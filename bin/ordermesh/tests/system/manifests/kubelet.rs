//! What a kubelet does with one pod, on this machine: the container's
//! process in the pod's network namespace (a host of the harness), inside a
//! bubblewrap sandbox that stands for the image and the security context,
//! then its probes as declared, then its stop.
//!
//! The sandbox (`setpriv` to the pod's uid and gid, then an unprivileged
//! `bwrap` in a user namespace mapping only that uid): a root of its own
//! with what the distroless image holds (the system libraries, the CA
//! certificates, nsswitch.conf, the image's WORKDIR, and the workspace's
//! `ordermesh` bound where the image puts it), remounted read-only when
//! `readOnlyRootFilesystem` says so; each declared volume mounted at its
//! mountPath (emptyDir writable and owned by the pod's user and fsGroup,
//! Secrets and ConfigMaps read-only); the pod's hosts file as /etc/hosts; a
//! pid namespace in which the container's process is pid 1, as under a
//! container runtime; no capabilities; exactly the pod's environment. A
//! write anywhere else fails with EROFS, as in the cluster.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use ordermesh_testkit::hosts::Host;
use ordermesh_testkit::process::ChildProcess;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::rendered::{Probe, Volume};

/// The image's PATH (distroless's), which the Dockerfile does not change.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start one pod's container.
pub struct PodPlan {
    pub name: String,
    pub host: Host,
    /// The binary on this machine and where the image has it.
    pub binary: (PathBuf, String),
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub uid: u32,
    pub gid: u32,
    pub fs_group: Option<u32>,
    pub workdir: String,
    pub read_only_root: bool,
    /// (volume, mountPath, read-only) for each volumeMount.
    pub mounts: Vec<(Volume, String, bool)>,
    /// Secret and ConfigMap contents by name, for their volumes.
    pub files: BTreeMap<String, BTreeMap<String, String>>,
    /// The pod's /etc/hosts.
    pub hosts_file: String,
    /// The CA bundle the image's /etc/ssl/certs carries.
    pub ca_bundle: PathBuf,
}

/// A running pod: its process (killed when dropped) and its volumes.
pub struct Pod {
    pub name: String,
    pub host: Host,
    process: ChildProcess,
    _dir: tempfile::TempDir,
}

impl Pod {
    pub async fn start(plan: PodPlan) -> Self {
        let dir = readable_tempdir();
        let args = sandbox_args(&plan, dir.path());
        let launch = plan
            .host
            .launch("setpriv")
            .args([
                format!("--reuid={}", plan.uid),
                format!("--regid={}", plan.gid),
                "--clear-groups".to_owned(),
                "--".to_owned(),
                "bwrap".to_owned(),
            ])
            .args(args);
        let process = ChildProcess::start(launch)
            .await
            .unwrap_or_else(|e| panic!("starting pod {}: {e:#}", plan.name));
        Self {
            name: plan.name,
            host: plan.host,
            process,
            _dir: dir,
        }
    }

    /// The last lines the container wrote (enough to see why it failed).
    pub fn logs(&self) -> String {
        let lines = self.process.logs();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Fails with the pod's output if its container has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.process.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "pod {}'s container exited ({status}); its output:\n{}",
                self.name,
                self.logs()
            )),
            Err(e) => Err(format!("pod {}: {e:#}", self.name)),
        }
    }

    /// Runs `probe` until it succeeds, for at most `attempts` tries 250 ms
    /// apart, each bounded by the probe's `timeout` (timeoutSeconds). The
    /// kubelet's periodSeconds is shortened: the test is about what is
    /// probed, not when.
    pub async fn probe_until_success(
        &mut self,
        kind: &str,
        probe: &Probe,
        timeout: Duration,
        ports: &BTreeMap<String, u16>,
        attempts: u64,
    ) -> Result<u64, String> {
        let mut last = String::new();
        for attempt in 1..=attempts {
            self.check_running()?;
            match run_probe(self.host.addr().into(), probe, timeout, ports).await {
                Ok(()) => return Ok(attempt),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!(
            "pod {}: {kind} probe {probe:?} never succeeded in {attempts} tries; last: {last}\n{}",
            self.name,
            self.logs()
        ))
    }

    /// The container's process (pid 1 of its sandbox, bwrap's child) as
    /// this machine numbers it.
    fn container_pid(&self) -> String {
        let bwrap = self.process.pid().expect("the pod runs");
        std::fs::read_to_string(format!("/proc/{bwrap}/task/{bwrap}/children"))
            .ok()
            .and_then(|children| children.split_whitespace().next().map(str::to_owned))
            .unwrap_or_else(|| panic!("pod {}: bwrap has no child", self.name))
    }

    /// The container's process runs as `uid`:`gid` as the kernel sees it
    /// (real, effective, saved and filesystem ids), with no capabilities
    /// and no way to gain privileges.
    pub fn assert_identity(&self, uid: u32, gid: u32) {
        let pid = self.container_pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|rest| rest.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let ids = |want: u32| vec![want.to_string(); 4];
        assert_eq!(field("Uid:"), ids(uid), "pod {}'s uids", self.name);
        assert_eq!(field("Gid:"), ids(gid), "pod {}'s gids", self.name);
        assert_eq!(
            field("CapEff:"),
            ["0000000000000000"],
            "pod {}'s capabilities",
            self.name
        );
        assert_eq!(
            field("NoNewPrivs:"),
            ["1"],
            "pod {}: allowPrivilegeEscalation",
            self.name
        );
    }

    /// The container's peak resident memory so far (VmHWM), in KiB: what a
    /// memory limit is held against. Read, not enforced (no cgroup here).
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.container_pid()))
            .expect("its status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmHWM in /proc/PID/status")
    }

    /// SIGTERM to the container's process (pid 1 of its sandbox), as the
    /// kubelet sends once preStop is done.
    pub fn terminate(&self) {
        let container = self.container_pid();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &container])
            .status()
            .expect("run kill");
        assert!(sent.success(), "pod {}: kill -TERM {container}", self.name);
    }

    /// After [`Pod::terminate`]: how the pod's probes see it while it
    /// shuts down. Polls `readiness` until it fails, then asks `liveness`
    /// once; None if the container exited while still ready.
    pub async fn draining(
        &mut self,
        readiness: (&Probe, Duration),
        liveness: (&Probe, Duration),
        ports: &BTreeMap<String, u16>,
    ) -> Option<Result<(), String>> {
        let addr = self.host.addr().into();
        loop {
            if self.check_running().is_err() {
                return None;
            }
            if run_probe(addr, readiness.0, readiness.1, ports)
                .await
                .is_err()
            {
                return Some(run_probe(addr, liveness.0, liveness.1, ports).await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits at most `grace` for the container to exit, as the kubelet
    /// does before its SIGKILL.
    pub async fn wait_exit(&mut self, grace: Duration) -> ExitStatus {
        tokio::time::timeout(grace, self.process.wait())
            .await
            .unwrap_or_else(|_| panic!("pod {} outlived its grace period {grace:?}", self.name))
            .expect("wait for the pod")
    }
}

/// One probe, once: gRPC health with the declared service, an HTTP GET of
/// the declared path (200..=399 passes, as for the kubelet), or a connect.
pub async fn run_probe(
    addr: std::net::IpAddr,
    probe: &Probe,
    limit: Duration,
    ports: &BTreeMap<String, u16>,
) -> Result<(), String> {
    let resolve = |port: &super::rendered::PortRef| {
        port.resolve(ports)
            .ok_or_else(|| format!("{port:?} names no containerPort of the pod"))
    };
    match probe {
        Probe::Grpc { port, service } => {
            let target = SocketAddr::new(addr, *port);
            let channel = tonic::transport::Channel::from_shared(format!("http://{target}"))
                .expect("a URL")
                .connect_timeout(limit)
                .timeout(limit)
                .connect()
                .await
                .map_err(|e| format!("connect {target}: {e}"))?;
            let response = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: service.clone(),
                })
                .await
                .map_err(|status| format!("Check({service:?}) on {target}: {status}"))?;
            let status = response.into_inner().status();
            match status {
                ServingStatus::Serving => Ok(()),
                other => Err(format!("Check({service:?}) on {target}: {other:?}")),
            }
        }
        Probe::HttpGet { port, path } => {
            let target = SocketAddr::new(addr, resolve(port)?);
            let (code, _) = http_get(target, path, limit).await?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("GET {path} on {target}: {code}"))
            }
        }
        Probe::TcpSocket { port } => {
            let target = SocketAddr::new(addr, resolve(port)?);
            tcp_connect(target, limit).await
        }
    }
}

pub async fn tcp_connect(target: SocketAddr, limit: Duration) -> Result<(), String> {
    match tokio::time::timeout(limit, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("connect {target}: {e}")),
        Err(_) => Err(format!("connect {target}: timed out")),
    }
}

/// The status code and body of `GET path` over HTTP/1.1, as the kubelet
/// (or Prometheus) asks it.
pub async fn http_get(
    target: SocketAddr,
    path: &str,
    limit: Duration,
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(target).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| format!("GET {path} on {target}: timed out"))?
        .map_err(|e| format!("GET {path} on {target}: {e}"))?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("GET {path} on {target}: no status line"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((code, body.to_owned()))
}

/// A temporary directory others may enter: the sandbox's user binds paths
/// under it.
fn readable_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// bwrap's arguments for `plan`, its scratch files under `dir`.
fn sandbox_args(plan: &PodPlan, dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--as-pid-1",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
    ]
    .map(str::to_owned)
    .into();
    let mut add = |words: &[&str]| args.extend(words.iter().map(|w| (*w).to_owned()));
    let (uid, gid) = (plan.uid.to_string(), plan.gid.to_string());
    add(&["--uid", &uid, "--gid", &gid, "--hostname", &plan.name]);
    // The image's root: its libraries, CA certificates and name service
    // configuration, the binary, its WORKDIR.
    add(&["--ro-bind", "/usr/lib", "/usr/lib"]);
    add(&["--ro-bind-try", "/usr/lib64", "/usr/lib64"]);
    add(&[
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
    ]);
    let files = dir.join("etc");
    std::fs::create_dir(&files).unwrap();
    let etc = |name: &str, text: &str| {
        let path = files.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path.display().to_string()
    };
    let hosts = etc("hosts", &plan.hosts_file);
    let nsswitch = etc("nsswitch.conf", "hosts: files dns\n");
    let passwd = etc(
        "passwd",
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    );
    let ca = plan.ca_bundle.display().to_string();
    add(&["--ro-bind", &hosts, "/etc/hosts"]);
    add(&["--ro-bind", &nsswitch, "/etc/nsswitch.conf"]);
    add(&["--ro-bind", &passwd, "/etc/passwd"]);
    add(&["--ro-bind", &ca, "/etc/ssl/certs/ca-certificates.crt"]);
    let binary = plan.binary.0.display().to_string();
    add(&["--ro-bind", &binary, &plan.binary.1]);
    add(&["--dir", "/tmp", "--dir", &plan.workdir]);
    add(&["--proc", "/proc", "--dev", "/dev"]);
    // The declared volumes, and nothing else writable.
    for (index, (volume, path, read_only)) in plan.mounts.iter().enumerate() {
        let source = dir.join(format!("volume-{index}"));
        std::fs::create_dir(&source).unwrap();
        let source_text = source.display().to_string();
        match volume {
            Volume::EmptyDir => {
                chown(&source, plan.uid, plan.fs_group.unwrap_or(plan.gid));
                std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o2775)).unwrap();
                let bind = if *read_only { "--ro-bind" } else { "--bind" };
                add(&[bind, &source_text, path]);
            }
            Volume::Secret(name) | Volume::ConfigMap(name) => {
                let contents = plan
                    .files
                    .get(name)
                    .unwrap_or_else(|| panic!("pod {}: no Secret or ConfigMap {name}", plan.name));
                std::fs::set_permissions(&source, std::fs::Permissions::from_mode(0o755)).unwrap();
                for (key, value) in contents {
                    let file = source.join(key);
                    std::fs::write(&file, value).unwrap();
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
                        .unwrap();
                }
                // Always read-only in Kubernetes, whatever the mount says.
                add(&["--ro-bind", &source_text, path]);
            }
        }
    }
    if plan.read_only_root {
        add(&["--remount-ro", "/"]);
    }
    add(&["--chdir", &plan.workdir]);
    for (name, value) in &plan.env {
        add(&["--setenv", name, value]);
    }
    add(&[
        "--setenv", "HOSTNAME", &plan.name, "--setenv", "PATH", IMAGE_PATH,
    ]);
    add(&["--"]);
    args.extend(plan.argv.iter().cloned());
    args
}

/// Whether bwrap can make a sandbox here as an unprivileged user (user
/// namespaces allowed); the reason when not.
pub fn sandbox_unavailable() -> Option<String> {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
    };
    for (tool, package) in [("bwrap", "bubblewrap"), ("setpriv", "util-linux")] {
        if !on_path(tool) {
            return Some(format!(
                "`{tool}` (Debian package {package}; scripts/install-system-tools.sh installs it)"
            ));
        }
    }
    let Ok(output) = std::process::Command::new("setpriv")
        .args(["--reuid=65532", "--regid=65532", "--clear-groups", "--"])
        .args(["bwrap", "--unshare-user", "--ro-bind", "/usr", "/usr"])
        .args([
            "--symlink",
            "usr/lib",
            "/lib",
            "--symlink",
            "usr/lib64",
            "/lib64",
        ])
        .args(["--", "/usr/bin/true"])
        .output()
    else {
        return Some("bubblewrap (`bwrap`, Debian package bubblewrap) and setpriv".to_owned());
    };
    (!output.status.success()).then(|| {
        format!(
            "an unprivileged bubblewrap sandbox ({})",
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}
