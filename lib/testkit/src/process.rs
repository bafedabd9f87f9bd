//! Real `ordermesh` processes, for the tests where the process is the point
//! (signals, kill -9, log output, the CLI, Envoy and the mesh) and for the
//! bench, whose CPU and start-up figures need real processes.
//!
//! A process reports each listener it bound with a `listening` log line
//! (`{"msg":"listening","role":…,"addr":…}`); [`ChildProcess::start`] waits
//! for the roles it is told to, so ports can be 0 and nothing races for them.
//!
//! A process can run inside a network namespace ([`Launch::netns`], used by
//! the hosts of [`crate::hosts`]); [`netns_command`] does the same for a
//! tool whose output is read at once.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// What to start and what to wait for.
#[derive(Clone, Debug)]
pub struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_remove: Vec<String>,
    roles: Vec<String>,
    timeout: Duration,
    netns: Option<String>,
}

impl Launch {
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            roles: Vec::new(),
            timeout: Duration::from_secs(60),
            netns: None,
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Leaves `name` out of the environment the child inherits.
    pub fn env_remove(mut self, name: impl Into<String>) -> Self {
        self.env_remove.push(name.into());
        self
    }

    /// Waits for a `listening` line of each of `roles` before `start` returns.
    pub fn wait_for<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.roles.extend(roles.into_iter().map(Into::into));
        self
    }

    /// Longest wait for the listeners (60 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the program inside the named network namespace, through
    /// `ip netns exec`, which execs it: the pid, signals and logs are the
    /// program's own.
    pub fn netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(name.into());
        self
    }

    fn command(&self) -> Command {
        match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns]).arg(&self.program);
                command
            }
            None => Command::new(&self.program),
        }
    }

    fn describe(&self) -> String {
        match &self.netns {
            Some(netns) => format!("{} (in {netns})", self.program.display()),
            None => self.program.display().to_string(),
        }
    }
}

/// A command that runs `program` inside network namespace `netns` (`ip netns
/// exec`), for tools whose output is read at once; add arguments as usual.
pub fn netns_command(netns: &str, program: impl AsRef<OsStr>) -> std::process::Command {
    let mut command = std::process::Command::new("ip");
    command.args(["netns", "exec", netns]).arg(program);
    command
}

/// Every line a process wrote, stdout and stderr, in arrival order.
pub type Logs = Arc<Mutex<Vec<String>>>;

/// A started process: killed when dropped.
pub struct ChildProcess {
    child: Option<Child>,
    addrs: HashMap<String, SocketAddr>,
    logs: Logs,
}

impl ChildProcess {
    /// Starts `launch` and waits until every role it names is listening.
    /// Fails with the process's output if it exits or times out first.
    pub async fn start(launch: Launch) -> anyhow::Result<Self> {
        Self::start_logging_to(launch, Logs::default()).await
    }

    /// As [`ChildProcess::start`], appending to `logs` (to keep one log
    /// across restarts).
    pub async fn start_logging_to(launch: Launch, logs: Logs) -> anyhow::Result<Self> {
        let mut command = launch.command();
        command
            .args(&launch.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for name in &launch.env_remove {
            command.env_remove(name);
        }
        command.envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", launch.describe()))?;

        let (addr_tx, mut addr_rx) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().context("the child's stdout")?;
        let stderr = child.stderr.take().context("the child's stderr")?;
        collect(Box::new(stdout), logs.clone(), Some(addr_tx));
        collect(Box::new(stderr), logs.clone(), None);

        let mut addrs = HashMap::new();
        let started = tokio::time::timeout(launch.timeout, async {
            while !launch.roles.iter().all(|role| addrs.contains_key(role)) {
                match addr_rx.recv().await {
                    Some((role, addr)) => {
                        addrs.insert(role, addr);
                    }
                    None => return false,
                }
            }
            true
        })
        .await;
        if started != Ok(true) {
            let _ = child.start_kill();
            let output = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
            bail!(
                "{} did not start listening ({:?}); its output:\n{output}",
                launch.describe(),
                launch.roles
            );
        }
        Ok(Self {
            child: Some(child),
            addrs,
            logs,
        })
    }

    /// The address `role` reported; panics if it was not waited for.
    pub fn addr(&self, role: &str) -> SocketAddr {
        *self
            .addrs
            .get(role)
            .unwrap_or_else(|| panic!("no `listening` line for {role} was waited for"))
    }

    pub fn addrs(&self) -> &HashMap<String, SocketAddr> {
        &self.addrs
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The shared log, to hand to a restarted process.
    pub fn log_handle(&self) -> Logs {
        self.logs.clone()
    }

    /// SIGKILL: no drain, no cleanup, as in a crash. Waits for the exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Sends `signal` (e.g. "TERM", "INT", "STOP", "CONT") without waiting.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("the process is not running")?;
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .context("running kill")?;
        anyhow::ensure!(sent.success(), "kill -{signal} {pid} failed");
        Ok(())
    }

    /// SIGTERM, then waits (at most `limit`) for the process to drain and exit.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        self.signal("TERM")?;
        let mut child = self.child.take().context("the process is not running")?;
        tokio::time::timeout(limit, child.wait())
            .await
            .with_context(|| format!("the process did not exit within {limit:?} of SIGTERM"))?
            .context("waiting for the process")
    }

    /// The exit status if the process has exited, None while it runs: for a
    /// caller that waits for readiness some other way (an HTTP probe, a
    /// file) and should stop waiting on a process that died.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        let child = self.child.as_mut().context("the process is not running")?;
        child.try_wait().context("polling the process")
    }

    /// Waits for the process to exit by itself.
    pub async fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("the process is not running")?;
        Ok(child.wait().await?)
    }
}

fn collect(
    stream: Box<dyn AsyncRead + Unpin + Send>,
    logs: Logs,
    addrs: Option<mpsc::UnboundedSender<(String, SocketAddr)>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(tx) = &addrs
                && let Some(found) = listening(&line)
            {
                let _ = tx.send(found);
            }
            if let Ok(mut logs) = logs.lock() {
                logs.push(line);
            }
        }
    });
}

/// The (role, address) of a `listening` log line.
pub fn listening(line: &str) -> Option<(String, SocketAddr)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    if value.get("msg")?.as_str()? != "listening" {
        return None;
    }
    let role = value.get("role")?.as_str()?.to_owned();
    let addr = value.get("addr")?.as_str()?.parse().ok()?;
    Some((role, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listening_lines_only() {
        let line =
            r#"{"ts":"x","level":"INFO","msg":"listening","role":"order","addr":"127.0.0.1:5"}"#;
        assert_eq!(
            listening(line),
            Some(("order".to_owned(), "127.0.0.1:5".parse().unwrap()))
        );
        assert_eq!(listening(r#"{"msg":"stopped","role":"order"}"#), None);
        assert_eq!(listening("not json"), None);
    }

    #[tokio::test]
    async fn a_process_that_exits_early_fails_with_its_output() {
        let launch = Launch::new("sh")
            .args(["-c", "echo boom; exit 3"])
            .wait_for(["order"]);
        let error = ChildProcess::start(launch).await.err().expect("fails");
        assert!(format!("{error:#}").contains("boom"), "{error:#}");
    }

    #[tokio::test]
    async fn try_wait_tells_a_running_process_from_an_exited_one() {
        let mut running = ChildProcess::start(Launch::new("sleep").args(["5"]))
            .await
            .expect("starts");
        assert!(running.try_wait().expect("polls").is_none());
        let mut exited = ChildProcess::start(Launch::new("true"))
            .await
            .expect("starts");
        let status = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(status) = exited.try_wait().expect("polls") {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("exits");
        assert!(status.success());
    }

    #[tokio::test]
    async fn waits_for_every_role() {
        let script = r#"echo '{"msg":"listening","role":"a","addr":"127.0.0.1:1"}'; echo '{"msg":"listening","role":"b","addr":"127.0.0.1:2"}'; sleep 5"#;
        let mut process =
            ChildProcess::start(Launch::new("sh").args(["-c", script]).wait_for(["a", "b"]))
                .await
                .expect("starts");
        assert_eq!(process.addr("b").port(), 2);
        process.kill().await;
        assert!(process.pid().is_none());
    }
}
