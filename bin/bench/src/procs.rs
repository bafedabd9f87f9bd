//! The processes a comparison starts, and what it reads of them. They are
//! real child processes (the test harness's `ChildProcess`): each binds
//! port 0 and says which port it got, so nothing races for a port. Their
//! CPU time and resident memory come from /proc, through procfs.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ordermesh_testkit::process::{ChildProcess, Launch};
use tokio::time::Instant;

/// Longest wait for a process to be ready.
pub const READY_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for a clean exit after SIGTERM; it is killed past that.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A started server: its process, and the time from spawn to ready.
pub struct Server {
    pub name: String,
    pub process: ChildProcess,
    pub pid: u32,
    pub ready: Duration,
}

impl Server {
    /// Starts `launch` and waits for the `listening` lines it names.
    pub async fn start(name: &str, launch: Launch) -> anyhow::Result<Self> {
        let spawned = Instant::now();
        let process = ChildProcess::start(launch.timeout(READY_LIMIT))
            .await
            .with_context(|| format!("starting {name}"))?;
        Self::ready(name, process, spawned)
    }

    /// A process that is ready now, spawned at `spawned`.
    pub fn ready(name: &str, process: ChildProcess, spawned: Instant) -> anyhow::Result<Self> {
        let pid = process
            .pid()
            .with_context(|| format!("{name} exited at once"))?;
        Ok(Self {
            name: name.to_owned(),
            process,
            pid,
            ready: spawned.elapsed(),
        })
    }

    /// Resident memory now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid)
    }

    /// SIGTERM and a bounded wait for the exit (killed past it); then its
    /// output goes to `log`, when given.
    pub async fn stop(mut self, log: Option<&Path>) -> anyhow::Result<()> {
        if let Err(error) = self.process.terminate(STOP_LIMIT).await {
            println!("note: {}: {error:#}; killed", self.name);
        }
        if let Some(log) = log {
            std::fs::write(log, self.process.logs().join("\n") + "\n")
                .with_context(|| format!("writing {}", log.display()))?;
        }
        Ok(())
    }
}

/// `ordermesh ARGS`, ready once every role of `roles` is listening, as
/// shipped: JSON logs at the default level, no trace export. None of the
/// caller's configuration leaks in: the suite's DATABASE_URL is the
/// PostgreSQL admin URL, not a store.
pub fn ordermesh(program: &Path, args: &[String], roles: &[&str]) -> anyhow::Result<Launch> {
    Ok(Launch::new(program)
        .args(args.iter().cloned())
        .envs(crate::identity::issuer()?.env())
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env_remove("LOG_LEVEL")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("ORDERMESH_LOG_FORMAT", "json")
        .wait_for(roles.iter().copied()))
}

/// The status and body of a GET of `url` (an admin endpoint).
pub async fn http_get(url: &str) -> anyhow::Result<(http::StatusCode, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = url.parse().with_context(|| format!("invalid URL {url}"))?;
    let response = client
        .get(uri)
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading {url}"))?
        .to_bytes();
    Ok((status, body))
}

fn process(pid: u32) -> anyhow::Result<procfs::process::Process> {
    let pid = i32::try_from(pid).context("a pid beyond i32")?;
    procfs::process::Process::new(pid).with_context(|| format!("process {pid}"))
}

/// Resident memory of process `pid` now (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    process(pid)?
        .status()
        .with_context(|| format!("/proc/{pid}/status"))?
        .vmrss
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// User plus system CPU time of process `pid` (every thread).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = process(pid)?
        .stat()
        .with_context(|| format!("/proc/{pid}/stat"))?;
    let ticks = (stat.utime + stat.stime) as f64;
    Ok(Duration::from_secs_f64(
        ticks / procfs::ticks_per_second() as f64,
    ))
}

/// CPU time of this process (the load generator).
pub fn own_cpu() -> anyhow::Result<Duration> {
    cpu_time(std::process::id())
}

/// Pids of the processes whose command line contains `needle` (e.g. the
/// PostgreSQL backends serving one database, whose title names it).
pub fn pids_matching(needle: &str) -> Vec<u32> {
    let Ok(processes) = procfs::process::all_processes() else {
        return Vec::new();
    };
    processes
        .filter_map(Result::ok)
        .filter(|p| {
            p.cmdline()
                .is_ok_and(|args| args.join(" ").contains(needle))
        })
        .filter_map(|p| u32::try_from(p.pid()).ok())
        .collect()
}

/// Samples the resident memory of `pids` every 100 ms until stopped; the
/// peak of each.
pub struct RssSampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut peaks = vec![0u64; pids.len()];
            loop {
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    if let Ok(rss) = rss_kib(*pid) {
                        *peak = (*peak).max(rss);
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = stopped.changed() => return peaks,
                }
            }
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> Vec<u64> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_measurable() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        own_cpu().unwrap();
        assert!(pids_matching("ordermesh_bench").contains(&std::process::id()));
    }

    #[tokio::test]
    async fn a_server_is_ready_at_its_listening_line_and_stops_on_sigterm() {
        let script =
            r#"echo '{"msg":"listening","role":"echo","addr":"127.0.0.1:7"}'; exec sleep 30"#;
        let launch = Launch::new("sh").args(["-c", script]).wait_for(["echo"]);
        let server = Server::start("sleeper", launch).await.unwrap();
        assert_eq!(server.process.addr("echo").port(), 7);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleeper.log");
        server.stop(Some(&log)).await.unwrap();
        assert!(std::fs::read_to_string(log).unwrap().contains("listening"));
    }
}
