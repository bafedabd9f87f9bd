//! The processes a comparison starts: spawned with their output in a file,
//! ready when they say so, measured through /proc, and stopped (SIGTERM,
//! then SIGKILL) before the suite moves on. Dropping one kills it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::process::{Child, Command};
use tokio::time::Instant;

pub struct Process {
    pub name: String,
    child: Child,
    pub pid: u32,
    spawned: Instant,
    log: PathBuf,
}

impl Process {
    /// Starts `program args` in `cwd` with `env` added, stdout and stderr
    /// written to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        cwd: &Path,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let out = std::fs::File::create(&log)
            .with_context(|| format!("creating the log {}", log.display()))?;
        let err = out.try_clone()?;
        let spawned = Instant::now();
        let child = Command::new(program)
            .args(args)
            // Nothing of the caller's configuration leaks in: the suite's
            // DATABASE_URL is the PostgreSQL admin URL, not a store.
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .env_remove("LOG_LEVEL")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child
            .id()
            .with_context(|| format!("{name} exited at once"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            pid,
            spawned,
            log,
        })
    }

    /// Waits until the process has logged `{"msg":"listening","role":R}`
    /// for every role in `roles`; returns their addresses and the time from
    /// spawn to the last of them (start to ready).
    pub async fn wait_listening(
        &mut self,
        roles: &[&str],
        limit: Duration,
    ) -> anyhow::Result<(HashMap<String, SocketAddr>, Duration)> {
        let mut addrs = HashMap::new();
        let mut ready_at = Duration::ZERO;
        let mut offset = 0usize;
        let mut pending = String::new();
        let deadline = Instant::now() + limit;
        loop {
            let content = std::fs::read(&self.log).unwrap_or_default();
            if content.len() > offset {
                pending.push_str(&String::from_utf8_lossy(&content[offset..]));
                offset = content.len();
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    if let Some((role, addr)) = listening(&line)
                        && roles.contains(&role.as_str())
                        && !addrs.contains_key(&role)
                    {
                        ready_at = self.spawned.elapsed();
                        addrs.insert(role, addr);
                    }
                }
            }
            if roles.iter().all(|role| addrs.contains_key(*role)) {
                return Ok((addrs, ready_at));
            }
            self.still_starting(deadline, limit)?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// An error once the process has exited or `deadline` (spawn + `limit`)
    /// has passed without it being ready.
    fn still_starting(&mut self, deadline: Instant, limit: Duration) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited ({status}) before it was ready:\n{}",
                self.name,
                self.log_tail()
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{} not ready within {limit:?}:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Waits until `url` answers 200; returns the time from spawn.
    pub async fn wait_http_ok(&mut self, url: &str, limit: Duration) -> anyhow::Result<Duration> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let uri: http::Uri = url.parse().with_context(|| format!("invalid URL {url}"))?;
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(response) = client.get(uri.clone()).await {
                let ok = response.status().is_success();
                let _ = response.into_body().collect().await;
                if ok {
                    return Ok(self.spawned.elapsed());
                }
            }
            self.still_starting(deadline, limit)?;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Resident memory now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid)
    }

    /// The last lines of the process's output.
    pub fn log_tail(&self) -> String {
        let content = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = content.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, a bounded wait for a clean exit, then SIGKILL.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }
}

/// The (role, address) of a `listening` log line.
pub fn listening(line: &str) -> Option<(String, SocketAddr)> {
    let value: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    if value.get("msg")?.as_str()? != "listening" {
        return None;
    }
    let role = value.get("role")?.as_str()?.to_owned();
    let addr = value.get("addr")?.as_str()?.parse().ok()?;
    Some((role, addr))
}

pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vm_rss(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Clock ticks per second of /proc/PID/stat's times (`getconf CLK_TCK`).
fn ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|ticks| *ticks > 0)
            .unwrap_or(100)
    })
}

/// User plus system CPU time of process `pid` (every thread).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = parse_cpu_ticks(&stat).with_context(|| format!("parsing /proc/{pid}/stat"))?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / ticks_per_second() as f64,
    ))
}

/// utime + stime (fields 14 and 15), counted after the `(comm)` field,
/// which may itself hold spaces.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state): utime is field 14 → index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of this process (the load generator).
pub fn own_cpu() -> anyhow::Result<Duration> {
    cpu_time(std::process::id())
}

/// Pids of the processes whose command line contains `needle` (e.g. the
/// PostgreSQL backends serving one database).
pub fn pids_matching(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
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
    fn reads_vm_rss() {
        let status = "Name:\tordermesh\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn reads_cpu_ticks_past_a_command_with_spaces() {
        let stat =
            "1234 (tokio rt) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn own_process_is_measurable() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        own_cpu().unwrap();
    }

    #[test]
    fn listening_lines() {
        let line =
            r#"{"ts":"x","level":"INFO","msg":"listening","role":"order","addr":"127.0.0.1:5051"}"#;
        let (role, addr) = listening(line).unwrap();
        assert_eq!(role, "order");
        assert_eq!(addr.port(), 5051);
        assert!(listening(r#"{"msg":"stopped","role":"order"}"#).is_none());
        assert!(listening("not json").is_none());
    }
}
