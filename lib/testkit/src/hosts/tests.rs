//! The harness's own bookkeeping: names, capabilities, idempotence and
//! cleanup. Traffic through the faults is proven in `tests/hosts.rs`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

#[test]
fn reads_the_effective_capabilities() {
    let status = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t0000000000201000\n";
    let caps = ip::effective_capabilities(status).unwrap();
    assert_eq!(caps, (1 << 12) | (1 << 21));
    assert_eq!(ip::effective_capabilities("Name:\tx\n"), None);
}

#[test]
fn names_record_their_owner() {
    assert_eq!(ip::owner("ordermesh-4242-0"), Some(4242));
    assert_eq!(ip::owner("ordermesh-4242-7-payment"), Some(4242));
    assert_eq!(ip::owner("ordermesh-4242"), None);
    assert_eq!(ip::owner("ordermesh-x-1"), None);
    assert_eq!(ip::owner("cni-4242-0"), None);
}

#[test]
fn subnets_are_distinct_24s_of_198_18_0_0_15() {
    assert_eq!(Subnet::nth(0).to_string(), "198.18.0.0/24");
    assert_eq!(Subnet::nth(511).to_string(), "198.19.255.0/24");
    assert_eq!(Subnet::nth(7).addr(254), Ipv4Addr::new(198, 18, 7, 254));
    assert!(Subnet::nth(7).contains(Ipv4Addr::new(198, 18, 7, 3)));
    assert!(!Subnet::nth(7).contains(Ipv4Addr::new(198, 18, 8, 3)));
    let fake_ip = Ipv4Addr::new(198, 18, 0, 0);
    assert!(ip::overlaps(fake_ip, 16, Subnet::nth(9).base));
    assert!(ip::overlaps(
        Ipv4Addr::new(198, 18, 9, 7),
        32,
        Subnet::nth(9).base
    ));
    assert!(!ip::overlaps(
        Ipv4Addr::new(10, 0, 0, 0),
        8,
        Subnet::nth(9).base
    ));
}

/// The `blackhole` rules in the hub, one line each.
fn drop_rules(network: &Network) -> Vec<String> {
    ip_in(Some(&network.hub), &["rule", "show"])
        .unwrap()
        .lines()
        .filter(|line| line.contains("blackhole"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_control_is_idempotent() {
    let Some(network) = Network::new() else {
        return;
    };
    let (a, b) = (network.host("a"), network.host("b"));
    network.cut(&a, &b);
    network.cut(&a, &b);
    network.cut_one_way(&a, &b);
    let cut = drop_rules(&network);
    network.heal(&a, &b);
    network.heal(&a, &b);
    let healed = drop_rules(&network);
    network.isolate(&a);
    network.isolate(&a);
    network.rejoin(&a);
    network.rejoin(&a);
    eprintln!(
        "cut twice and one way once: {} drop rules; healed twice: {}",
        cut.len(),
        healed.len()
    );
    assert_eq!(cut.len(), 2, "{cut:?}");
    assert!(healed.is_empty(), "{healed:?}");
}

fn link_exists(link: &str) -> bool {
    ip(&["link", "show", "dev", link]).is_ok()
}

/// Polls `done` for up to 5 s: a deleted namespace is destroyed, and the
/// veths in it with their far ends, asynchronously.
fn soon(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

#[test]
fn dropping_removes_everything_even_in_a_panic() {
    if Network::new().is_none() {
        return;
    }
    let (made_tx, made_rx) = std::sync::mpsc::channel();
    let panicked = std::thread::spawn(move || {
        let network = Network::new().unwrap();
        let host = network.host("doomed");
        network.host("other");
        // Still running when the network drops: Drop kills it.
        let sleeper = host
            .command("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        made_tx
            .send((network.namespaces(), network.runner.link.clone(), sleeper))
            .unwrap();
        panic!("a failing test");
    })
    .join();
    assert!(panicked.is_err());
    let (namespaces, link, mut sleeper) = made_rx.recv().unwrap();
    let left: Vec<String> = ip::namespaces()
        .into_iter()
        .filter(|name| namespaces.contains(name))
        .collect();
    let killed = soon(|| sleeper.try_wait().unwrap().is_some());
    eprintln!(
        "dropped in a panic: {} namespaces made, {} left; runner's link {link} left: {}; \
         process in a host killed: {killed}",
        namespaces.len(),
        left.len(),
        link_exists(&link)
    );
    assert_eq!(namespaces.len(), 3);
    assert!(left.is_empty(), "{left:?}");
    assert!(!link_exists(&link));
    assert!(killed);
}

#[test]
fn a_new_network_sweeps_what_a_dead_test_process_left() {
    if Network::new().is_none() {
        return;
    }
    // The owner lives while the leftovers are made, so no concurrent sweep
    // (this process's or another's) takes them early, then dies, as a test
    // process killed with SIGKILL would.
    let mut owner = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = owner.id();
    let leftover = Network::create(pid, 0).unwrap();
    leftover.host("orphan");
    let (namespaces, link) = (leftover.namespaces(), leftover.runner.link.clone());
    std::mem::forget(leftover);
    owner.kill().unwrap();
    owner.wait().unwrap();
    let present = |name: &String| ip::namespaces().contains(name);
    assert!(namespaces.iter().all(present));
    assert!(link_exists(&link));

    let _network = Network::new().unwrap();
    let swept = namespaces.iter().filter(|name| !present(name)).count();
    let link_gone = soon(|| !link_exists(&link));
    eprintln!(
        "dead pid {pid} left {} namespaces and link {link}: {swept} swept, link gone: {link_gone}",
        namespaces.len()
    );
    assert_eq!(swept, namespaces.len());
    assert!(link_gone);
}
