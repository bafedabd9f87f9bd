//! The system side of [`super::Network`]: `ip` commands, the capability
//! check, the names that record an owner, and the sweep of dead owners'
//! leftovers.
//!
//! Everything goes through the `ip` binary rather than a netlink crate:
//! creating and entering namespaces needs setns/unshare and mounts, which the
//! workspace's `unsafe_code = "forbid"` rules out in-process, and `ip` is
//! what a reader would type to reproduce a step by hand.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Every name the harness gives a namespace starts with this, then the owner
/// pid: `ordermesh-<pid>-<n>` (a Network's hub), `ordermesh-<pid>-<n>-<host>`.
pub(super) const PREFIX: &str = "ordermesh-";

/// CAP_NET_ADMIN (links, addresses, routes, rules) and CAP_SYS_ADMIN (`ip
/// netns add` and `exec` unshare and mount), from capabilities(7).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// What is missing for the harness, or None when it can run: the
/// capabilities (not uid 0: a root in a container may lack them, and a
/// non-root process may hold them) and the `ip` tool.
pub(super) fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(caps) = effective_capabilities(&status) else {
        return Some("CapEff in /proc/self/status, to check capabilities,".to_owned());
    };
    let lacking: Vec<&str> = [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .into_iter()
    .filter(|(bit, _)| caps & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect();
    if !lacking.is_empty() {
        return Some(format!(
            "{}, which the hosts' network namespaces need,",
            lacking.join(" and ")
        ));
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("the `ip` tool (iproute2)".to_owned());
    }
    None
}

/// The CapEff mask of a `/proc/<pid>/status` text.
pub(super) fn effective_capabilities(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Runs `ip ARGS`; its stdout, or an error with the command and its stderr.
pub(super) fn ip<S: AsRef<str>>(args: &[S]) -> anyhow::Result<String> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let output = Command::new("ip")
        .args(&args)
        .output()
        .context("running ip")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `ip -n NETNS ARGS`, or plain `ip ARGS` in the root namespace (None).
pub(super) fn ip_in<S: AsRef<str>>(netns: Option<&str>, args: &[S]) -> anyhow::Result<String> {
    let mut all: Vec<&str> = match netns {
        Some(netns) => vec!["-n", netns],
        None => Vec::new(),
    };
    all.extend(args.iter().map(AsRef::as_ref));
    ip(&all)
}

/// As [`ip_in`], where "already so" counts as done: the kernel answers EEXIST
/// to a second identical add and ENOENT to a second delete, which is what
/// makes the controls idempotent without bookkeeping that could drift.
pub(super) fn ip_idempotent<S: AsRef<str>>(netns: Option<&str>, args: &[S]) -> anyhow::Result<()> {
    match ip_in(netns, args) {
        Ok(_) => Ok(()),
        Err(error) => {
            let text = error.to_string();
            if text.contains("File exists") || text.contains("No such file or directory") {
                Ok(())
            } else {
                Err(error)
            }
        }
    }
}

/// Writes `value` to a sysctl file of `netns` (only a process inside a
/// namespace sees that namespace's `/proc/sys/net`).
pub(super) fn sysctl(netns: &str, path: &str, value: &str) -> anyhow::Result<()> {
    let output = crate::process::netns_command(netns, "sh")
        .args(["-c", &format!("echo {value} > {path}")])
        .output()
        .context("running sh in a namespace")?;
    if !output.status.success() {
        bail!(
            "writing {path} in {netns}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The pid a harness name records, for `ordermesh-<pid>-…` names.
pub(super) fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    if rest.is_empty() {
        return None;
    }
    pid.parse().ok()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}

/// The named network namespaces (`ip netns list`).
pub(super) fn namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// SIGKILLs whatever still runs inside `netns`: the harness's own children
/// and the daemons they started (PostgreSQL), never anything outside it.
pub(super) fn kill_inside(netns: &str) {
    let pids = ip(&["netns", "pids", netns]).unwrap_or_default();
    let pids: Vec<&str> = pids.split_whitespace().collect();
    if !pids.is_empty() {
        let _ = Command::new("kill").arg("-KILL").args(&pids).output();
    }
}

/// Removes the namespaces of earlier runs whose owner is dead (a test
/// process killed, or aborted, before its Networks dropped). Deleting a hub
/// destroys its veths, and with them their root-namespace ends and routes.
/// A live owner's names are left alone, so concurrent test processes never
/// sweep each other; a dead owner's pid reused by an unrelated live process
/// keeps its leftovers until that process exits.
pub(super) fn sweep() {
    for name in namespaces() {
        let Some(pid) = owner(&name) else { continue };
        if alive(pid) {
            continue;
        }
        kill_inside(&name);
        // Another process sweeping at once may have deleted it first.
        if ip(&["netns", "delete", &name]).is_ok() {
            eprintln!("hosts: removed {name}, left over by dead pid {pid}");
        }
    }
}

/// Whether the prefix `base/len` overlaps `subnet/24`.
pub(super) fn overlaps(base: Ipv4Addr, len: u32, subnet: Ipv4Addr) -> bool {
    let len = len.min(24);
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(base) & mask == u32::from(subnet) & mask
}

/// Whether a route of the root namespace (any table) overlaps `subnet/24`,
/// apart from the default route: the machine's own use of the range wins.
pub(super) fn root_routes_overlap(subnet: Ipv4Addr) -> anyhow::Result<bool> {
    let routes: serde_json::Value =
        serde_json::from_str(&ip(&["-4", "-j", "route", "show", "table", "all"])?)
            .context("reading `ip -j route`")?;
    Ok(routes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|route| route.get("dst")?.as_str())
        .filter(|dst| *dst != "default")
        .filter_map(|dst| {
            let (base, len) = dst.split_once('/').unwrap_or((dst, "32"));
            Some((base.parse().ok()?, len.parse().ok()?))
        })
        .any(|(base, len)| overlaps(base, len, subnet)))
}

/// A link's operstate, and whether its carrier is up (LOWER_UP).
fn link_state(netns: Option<&str>, link: &str) -> anyhow::Result<(String, bool)> {
    let shown: serde_json::Value =
        serde_json::from_str(&ip_in(netns, &["-j", "link", "show", "dev", link])?)
            .context("reading `ip -j link`")?;
    let link = &shown[0];
    let operstate = link["operstate"].as_str().unwrap_or_default().to_owned();
    let carrier = link["flags"]
        .as_array()
        .is_some_and(|flags| flags.iter().any(|flag| flag == "LOWER_UP"));
    Ok((operstate, carrier))
}

/// Waits until both ends of a veth pass packets (`up`), or have both lost
/// the carrier (`!up`). The carrier changes at once, but until the kernel's
/// link-watch work sets operstate UP and, in the same step, activates the
/// transmit queue, packets sent are dropped: operstate is the signal.
pub(super) fn wait_link(ends: [(Option<&str>, &str); 2], up: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut done = true;
        for (netns, link) in ends {
            let (operstate, carrier) = link_state(netns, link)?;
            done &= if up { operstate == "UP" } else { !carrier };
        }
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{ends:?} did not go {}", if up { "up" } else { "down" });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
