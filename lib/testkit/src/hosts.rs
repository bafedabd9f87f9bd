//! Hosts: each role of a test on a machine of its own, and faults between
//! them.
//!
//! A [`Network`] is a private network for one test. Each [`Host`] on it is a
//! network namespace with one link (`eth0`, a veth) to the network's hub and
//! one address; a program started in a host ([`Host::launch`],
//! [`Host::command`], [`crate::postgres::PrivatePostgres::start_in`]) binds
//! and connects there, as a pod would. The test process itself, in the root
//! namespace, sits on the network too as [`Network::runner`], so in-process
//! clients (the load, sqlx, tonic) reach the hosts at their addresses.
//!
//! # Topology and addressing
//!
//! The hub is a namespace of its own that routes between its ports (one per
//! host, `h-<name>`, and `uplink` to the runner): a router rather than a
//! bridge, because its rules see every packet in flight. A drop rule in the
//! receiving host instead would miss established connections: TCP's early
//! demux hands their segments to the socket without the route lookup that
//! applies rules (measured: an echo loop kept answering, 30 of 30, through a
//! 3 s "cut" made that way).
//!
//! Each Network takes a /24 of 198.18.0.0/15, the range RFC 2544 sets aside
//! for testing network devices (nothing real is routed there; a /24 the
//! machine already routes is skipped). In it, `.1` is the runner, `.2` and
//! up the hosts in the order they were made, `.254` the hub, every host's
//! gateway. A host holds its address as a /32 and reaches the /24 through
//! the hub; it has no default route, and neither has the hub, so nothing
//! outside the subnet is reachable (connect fails at once with
//! ENETUNREACH), and only the test process can reach in.
//!
//! # Names, and tests running at once
//!
//! Namespaces are `ordermesh-<pid>-<n>` (the hub; `n` counts this process's
//! Networks) and `ordermesh-<pid>-<n>-<host>`, unique while the pid lives.
//! The runner's link is `omnet<i>` (hex) for subnet `i`: creating it is the
//! claim on the subnet, since the kernel refuses a second link of that name,
//! so two processes can never take one subnet; the one that loses tries the
//! next. Names inside namespaces (`eth0`, `h-<host>`) need only be unique
//! there.
//!
//! # Faults, and what TCP sees
//!
//! Every control returns once the kernel applies it to the next packet, and
//! doing one twice is the same as once.
//!
//! - [`Network::cut`]`(a, b)`: the hub discards every packet between a and b,
//!   both ways, silently (a `blackhole` rule, no ICMP), as when a path goes
//!   dark. A new connect() either way gets no answer to its SYN and blocks
//!   until the caller's timeout (the kernel's own is about 2 min). An
//!   established connection gets no error: writes are buffered, reads
//!   block, segments are retransmitted with exponential backoff; after
//!   [`Network::heal`] it resumes at the next retransmission with nothing
//!   lost (unless the cut outlasted a user timeout, or ~15 min). Nobody
//!   else's traffic changes.
//! - [`Network::cut_one_way`]`(from, to)`: only packets from `from` to `to`
//!   are discarded; `to`'s packets reach `from` (UDP from `to` arrives). TCP
//!   needs both ways, so: from's connect to `to` loses its SYN and blocks;
//!   to's connect to `from` has its SYN arrive but from's SYN-ACK lost, so it
//!   blocks too (from's listener holds a half-open entry it never accepts).
//!   On an established connection, data from `to` reaches from's application
//!   but from's ACKs and data are lost, so `to` retransmits until its window
//!   fills and then its writes block: a request from `to` to a server on
//!   `from` is received and handled, and its response never arrives.
//! - [`Network::isolate`]`(h)`: h's switch port (the hub's end of its link)
//!   goes down, and h's `eth0` loses its carrier. Packets to h (from any
//!   host or the runner) are discarded by the hub silently: connects to h
//!   block until timeout, connections stall. h's own packets go nowhere: its
//!   ARP entries are flushed with the carrier, so its new connects fail with
//!   EHOSTUNREACH once ARP gives up (about 3 s: three probes a second apart)
//!   or time out first; its connections stall. [`Network::rejoin`] brings the
//!   port up and returns once both ends report UP; stalled connections
//!   resume at their next retransmission.
//!
//! # Cleanup
//!
//! Dropping the Network, also while a test panics, SIGKILLs what still runs
//! in its hosts, deletes the runner's link (with its route) and every
//! namespace it made; declare the Network before the processes and servers
//! that run in it, so they stop first, gracefully. A test process that dies
//! without unwinding (SIGKILL, abort) leaves its namespaces behind: the next
//! `Network::new()` of any test process removes every harness namespace
//! whose owner pid is dead (and so the veths and routes that hang off them).
//! Check by hand with `ip netns list | grep ordermesh-` and `ip link | grep
//! omnet`.
//!
//! # Without the capabilities
//!
//! The harness needs CAP_NET_ADMIN and CAP_SYS_ADMIN (`ip netns` unshares
//! and mounts), read from CapEff in `/proc/self/status` rather than from the
//! uid, and the `ip` tool. Without them, or when namespaces cannot be
//! created (a container's AppArmor profile denying mounts, a read-only
//! `/proc/sys`), [`Network::new`] returns None through [`crate::missing`]:
//! the test skips with a message, or fails under `ORDERMESH_REQUIRE_ALL=1`.

mod ip;
#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::process::{Launch, netns_command};
use ip::{PREFIX, ip, ip_idempotent, ip_in, wait_link};

/// The /24s of 198.18.0.0/15.
const SUBNETS: u32 = 512;
/// The hub's address in every subnet, every host's gateway.
const HUB: u8 = 254;
const RUNNER: u8 = 1;
/// The priority of the drop rules: ahead of the main table (32766).
const DROP_PRIORITY: &str = "1000";

/// A /24 of a Network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    base: Ipv4Addr,
}

impl Subnet {
    fn nth(index: u32) -> Self {
        Self {
            base: Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (index << 8)),
        }
    }

    /// Address `.last` of the subnet.
    pub fn addr(self, last: u8) -> Ipv4Addr {
        let [a, b, c, _] = self.base.octets();
        Ipv4Addr::new(a, b, c, last)
    }

    pub fn contains(self, addr: Ipv4Addr) -> bool {
        addr.octets()[..3] == self.base.octets()[..3]
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/24", self.base)
    }
}

/// One machine of a [`Network`]: a network namespace with one address (or,
/// for [`Network::runner`], the test process's own namespace). A plain
/// description, cheap to clone; the Network owns what it names.
#[derive(Clone, Debug)]
pub struct Host {
    name: String,
    addr: Ipv4Addr,
    subnet: Subnet,
    netns: Option<String>,
    /// The hub's end of its link (its switch port)...
    port: String,
    /// ...and its own end.
    link: String,
}

impl Host {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// Its address with `port`, to listen on or connect to.
    pub fn socket(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.addr, port))
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// Its network namespace; None for the runner (the root namespace).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// A process to start in this host ([`crate::process::ChildProcess`]).
    pub fn launch(&self, program: impl Into<PathBuf>) -> Launch {
        let launch = Launch::new(program);
        match &self.netns {
            Some(netns) => launch.netns(netns.clone()),
            None => launch,
        }
    }

    /// A tool to run in this host, its output read at once.
    pub fn command(&self, program: impl AsRef<OsStr>) -> std::process::Command {
        match &self.netns {
            Some(netns) => netns_command(netns, program),
            None => std::process::Command::new(program),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.addr)
    }
}

/// A private network of hosts for one test; everything it made is removed
/// when it drops. See the module documentation.
pub struct Network {
    /// The hub's namespace, also the prefix of the hosts'.
    hub: String,
    subnet: Subnet,
    runner: Host,
    hosts: Mutex<Vec<Host>>,
}

impl Network {
    /// A new network with only the runner on it, after removing what dead
    /// test processes left behind. None (skip) without the capabilities,
    /// the `ip` tool or working namespaces, unless everything is required.
    ///
    /// # Panics
    ///
    /// If setting it up fails past the first namespace.
    pub fn new() -> Option<Self> {
        if let Some(what) = ip::unavailable() {
            return crate::missing(&what);
        }
        ip::sweep();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        match Self::create(std::process::id(), n) {
            Ok(network) => Some(network),
            Err(what) => crate::missing(&what),
        }
    }

    /// A network recorded as `owner`'s: [`Network::new`] uses this process's
    /// pid; tests fake a dead owner's leftovers with another.
    fn create(owner: u32, n: u32) -> Result<Self, String> {
        let hub = format!("{PREFIX}{owner}-{n}");
        ip(&["netns", "add", &hub]).map_err(|e| format!("network namespaces ({e:#})"))?;
        if let Err(error) = ip::sysctl(&hub, "/proc/sys/net/ipv4/ip_forward", "1") {
            let _ = ip(&["netns", "delete", &hub]);
            return Err(format!(
                "a writable /proc/sys in network namespaces ({error:#})"
            ));
        }
        let (subnet, uplink) = match claim(&hub, owner, n) {
            Ok(claimed) => claimed,
            Err(error) => {
                let _ = ip(&["netns", "delete", &hub]);
                panic!("hosts: claiming a subnet: {error:#}");
            }
        };
        let network = Self {
            runner: Host {
                name: "runner".to_owned(),
                addr: subnet.addr(RUNNER),
                subnet,
                netns: None,
                port: "uplink".to_owned(),
                link: uplink,
            },
            hub,
            subnet,
            hosts: Mutex::new(Vec::new()),
        };
        // From here a failure panics and Drop removes what was made.
        network.must(network.wire_hub());
        network.must(network.wire(&network.runner));
        Ok(network)
    }

    fn wire_hub(&self) -> anyhow::Result<()> {
        let hub = Some(self.hub.as_str());
        ip_in(hub, &["link", "set", "dev", "lo", "up"])?;
        // Packets for a subnet address without a live port (an isolated
        // host, an address nobody has) vanish rather than draw an ICMP
        // "unreachable" from the hub, as on a dark path.
        ip_in(
            hub,
            &["route", "add", "blackhole", &self.subnet.to_string()],
        )?;
        Ok(())
    }

    /// Addresses and brings up `host`'s link, whose two ends exist.
    fn wire(&self, host: &Host) -> anyhow::Result<()> {
        let (addr, gateway) = (host.addr.to_string(), self.subnet.addr(HUB).to_string());
        let hub = Some(self.hub.as_str());
        let own = host.netns();
        ip_in(
            hub,
            &["addr", "add", &gateway, "peer", &addr, "dev", &host.port],
        )?;
        ip_in(hub, &["link", "set", "dev", &host.port, "up"])?;
        ip_in(
            own,
            &["addr", "add", &addr, "peer", &gateway, "dev", &host.link],
        )?;
        ip_in(own, &["link", "set", "dev", &host.link, "up"])?;
        let subnet = self.subnet.to_string();
        let route = ["route", "add", &subnet, "via", &gateway, "dev", &host.link];
        ip_in(own, &route)?;
        wait_link([(hub, &host.port), (own, &host.link)], true)
    }

    /// A new host, `name` being short (at most 13 of `a-z`, `0-9`, `-`) and
    /// unique on this network; it gets the next address.
    ///
    /// # Panics
    ///
    /// On a bad or taken name, or when the kernel refuses a step.
    pub fn host(&self, name: &str) -> Host {
        assert!(
            (1..=13).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "host name {name:?}: 1 to 13 of a-z, 0-9 and -"
        );
        let host = {
            let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
            assert!(
                name != self.runner.name && hosts.iter().all(|h| h.name != name),
                "host {name} exists"
            );
            let last = u8::try_from(hosts.len() + 2)
                .ok()
                .filter(|last| *last < HUB)
                .expect("at most 252 hosts");
            let host = Host {
                name: name.to_owned(),
                addr: self.subnet.addr(last),
                subnet: self.subnet,
                netns: Some(format!("{}-{name}", self.hub)),
                port: format!("h-{name}"),
                link: "eth0".to_owned(),
            };
            // Recorded first, so Drop removes it whatever fails below.
            hosts.push(host.clone());
            host
        };
        let netns = host.netns().unwrap_or_default();
        self.must(ip(&["netns", "add", netns]));
        self.must(ip_in(Some(netns), &["link", "set", "dev", "lo", "up"]));
        self.must(ip_in(
            Some(&self.hub),
            &[
                "link", "add", "name", &host.port, "type", "veth", "peer", "name", &host.link,
                "netns", netns,
            ],
        ));
        self.must(self.wire(&host));
        host
    }

    /// The test process's own seat, `.1`: in-process clients connect from
    /// here, and programs launched from it run in the root namespace.
    pub fn runner(&self) -> &Host {
        &self.runner
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    /// The namespaces it made (the hub's first), as `ip netns list` names
    /// them.
    pub fn namespaces(&self) -> Vec<String> {
        let hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        std::iter::once(self.hub.clone())
            .chain(hosts.iter().filter_map(|h| h.netns.clone()))
            .collect()
    }

    /// Drops every packet between `a` and `b`, both ways, until
    /// [`Network::heal`].
    pub fn cut(&self, a: &Host, b: &Host) {
        self.drop_packets(a, b, true);
        self.drop_packets(b, a, true);
        eprintln!("hosts: cut {a} <-> {b}: the hub drops their packets both ways");
    }

    /// Drops the packets from `from` to `to`; those from `to` to `from` pass.
    pub fn cut_one_way(&self, from: &Host, to: &Host) {
        self.drop_packets(from, to, true);
        eprintln!("hosts: cut {from} -> {to}: the hub drops packets that way only");
    }

    /// Undoes [`Network::cut`] and [`Network::cut_one_way`] between `a` and
    /// `b`, whichever ways were cut.
    pub fn heal(&self, a: &Host, b: &Host) {
        self.drop_packets(a, b, false);
        self.drop_packets(b, a, false);
        eprintln!("hosts: healed {a} <-> {b}");
    }

    /// Takes `host`'s link down at the hub, cutting it from everyone, until
    /// [`Network::rejoin`].
    pub fn isolate(&self, host: &Host) {
        self.set_port(host, false);
        eprintln!("hosts: isolated {host}: its switch port is down");
    }

    /// Brings an isolated host's link back up; returns once both ends are UP.
    pub fn rejoin(&self, host: &Host) {
        self.set_port(host, true);
        eprintln!("hosts: {host} rejoined: its switch port is up");
    }

    fn drop_packets(&self, from: &Host, to: &Host, dropped: bool) {
        self.check(from);
        self.check(to);
        let (from, to) = (from.addr.to_string(), to.addr.to_string());
        let verb = if dropped { "add" } else { "del" };
        let rule = [
            "rule",
            verb,
            "priority",
            DROP_PRIORITY,
            "from",
            &from,
            "to",
            &to,
            "blackhole",
        ];
        self.must(ip_idempotent(Some(&self.hub), &rule));
    }

    fn set_port(&self, host: &Host, up: bool) {
        self.check(host);
        let state = if up { "up" } else { "down" };
        self.must(ip_in(
            Some(&self.hub),
            &["link", "set", "dev", &host.port, state],
        ));
        self.must(wait_link(
            [(Some(&self.hub), &host.port), (host.netns(), &host.link)],
            up,
        ));
    }

    fn check(&self, host: &Host) {
        assert!(
            host.subnet == self.subnet,
            "{host} is not on the network {}",
            self.subnet
        );
    }

    fn must<T>(&self, result: anyhow::Result<T>) -> T {
        result.unwrap_or_else(|error| panic!("hosts ({}): {error:#}", self.hub))
    }
}

/// Takes the first free subnet from a start that differs between processes
/// and networks, by creating the runner's link named after it (see the
/// module documentation), its far end in the hub.
fn claim(hub: &str, owner: u32, n: u32) -> anyhow::Result<(Subnet, String)> {
    let start = owner.wrapping_mul(31).wrapping_add(n) % SUBNETS;
    for index in (0..SUBNETS).map(|i| (start + i) % SUBNETS) {
        let subnet = Subnet::nth(index);
        if ip::root_routes_overlap(subnet.base)? {
            continue;
        }
        let link = format!("omnet{index:03x}");
        let add = [
            "link", "add", "name", &link, "type", "veth", "peer", "name", "uplink", "netns", hub,
        ];
        match ip(&add) {
            Ok(_) => return Ok((subnet, link)),
            Err(error) if error.to_string().contains("File exists") => continue,
            Err(error) => return Err(error),
        }
    }
    anyhow::bail!("every /24 of 198.18.0.0/15 is taken")
}

impl Drop for Network {
    fn drop(&mut self) {
        let hosts = std::mem::take(self.hosts.get_mut().unwrap_or_else(PoisonError::into_inner));
        let namespaces: Vec<&str> = hosts
            .iter()
            .filter_map(Host::netns)
            .chain([self.hub.as_str()])
            .collect();
        for netns in &namespaces {
            ip::kill_inside(netns);
        }
        // Deleting the link is synchronous, unlike the destruction of a
        // deleted namespace: the root namespace is clean when drop returns.
        let mut failed = Vec::new();
        if let Err(error) = ip(&["link", "del", "dev", &self.runner.link]) {
            failed.push(format!("{error:#}"));
        }
        for netns in namespaces {
            if let Err(error) = ip(&["netns", "delete", netns]) {
                failed.push(format!("{error:#}"));
            }
        }
        if !failed.is_empty() {
            eprintln!("warning: hosts: cleanup of {}: {failed:?}", self.hub);
        }
    }
}
