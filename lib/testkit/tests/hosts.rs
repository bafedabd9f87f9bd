//! The hosts harness under traffic: each fault of `ordermesh_testkit::hosts`
//! does to TCP (and UDP) what its documentation says, and undoing it
//! restores the traffic. The peers are `netprobe` processes run inside the
//! hosts; the runner's probes run in the test's own namespace.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ordermesh_testkit::hosts::{Host, Network};
use ordermesh_testkit::postgres::PrivatePostgres;
use ordermesh_testkit::process::ChildProcess;
use sqlx::Connection;

const NETPROBE: &str = env!("CARGO_BIN_EXE_netprobe");
const PORT: u16 = 7000;
/// Long enough for a handshake on a live path (well under 1 ms here).
const CONNECT_MS: u64 = 1000;

/// A netprobe echo server and UDP sink on `host`'s address.
async fn serve(host: &Host) -> ChildProcess {
    let launch = host
        .launch(NETPROBE)
        .args(["serve", &host.socket(PORT).to_string()])
        .wait_for(["tcp", "udp"])
        .timeout(Duration::from_secs(10));
    ChildProcess::start(launch)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"))
}

/// The outcome of one TCP handshake from `from` to `to` within `ms`: "ok",
/// "timed out", "host unreachable"...
async fn connect(from: &Host, to: SocketAddr, ms: u64) -> String {
    let mut command = from.command(NETPROBE);
    command.args(["connect", &to.to_string(), &ms.to_string()]);
    let output = tokio::process::Command::from(command)
        .output()
        .await
        .expect("run netprobe connect");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["msg"] == "connect")
        .and_then(|line| line["outcome"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("netprobe connect said: {stdout}"))
}

/// The lines of `process` whose `msg` is `msg`.
fn lines(process: &ChildProcess, msg: &str) -> Vec<serde_json::Value> {
    process
        .logs()
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["msg"] == msg)
        .collect()
}

fn echoes(stream: &ChildProcess) -> usize {
    lines(stream, "echo").len()
}

/// Waits (at most `limit`) until `stream` has answered `count` round trips.
async fn wait_echoes(stream: &ChildProcess, count: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while echoes(stream) < count {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// A connection from `from` to `to`'s echo server, a round trip every 50 ms.
async fn stream(from: &Host, to: &Host) -> ChildProcess {
    let launch = from
        .launch(NETPROBE)
        .args(["stream", &to.socket(PORT).to_string(), "50"]);
    let stream = ChildProcess::start(launch)
        .await
        .unwrap_or_else(|error| panic!("{error:#}"));
    assert!(wait_echoes(&stream, 5, Duration::from_secs(10)).await);
    stream
}

/// Longer than a round trip plus the stream's pause: what was in flight when
/// a fault began has landed (or been dropped).
const SETTLE: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_stops_two_hosts_talking_until_it_heals() {
    let Some(network) = Network::new() else {
        return;
    };
    let (a, b, runner) = (network.host("a"), network.host("b"), network.runner());
    let (_a_server, _b_server) = (serve(&a).await, serve(&b).await);
    let before = connect(&a, b.socket(PORT), CONNECT_MS).await;
    assert_eq!(before, "ok");
    let stream = stream(&a, &b).await;

    network.cut(&a, &b);
    tokio::time::sleep(SETTLE).await;
    let at_cut = echoes(&stream);
    let during = [
        connect(&a, b.socket(PORT), CONNECT_MS).await,
        connect(&b, a.socket(PORT), CONNECT_MS).await,
        connect(runner, a.socket(PORT), CONNECT_MS).await,
        connect(runner, b.socket(PORT), CONNECT_MS).await,
    ];
    let stalled = echoes(&stream) - at_cut;

    network.heal(&a, &b);
    let after = connect(&a, b.socket(PORT), CONNECT_MS).await;
    // Resumes at the next retransmission, the backoff being a few seconds.
    let resumed = wait_echoes(&stream, at_cut + 5, Duration::from_secs(15)).await;
    eprintln!(
        "cut a<->b: connects a->b {:?}, b->a {:?}, runner->a {:?}, runner->b {:?}; \
         the established a->b stream answered {stalled} round trips in the cut, \
         resumed after heal: {resumed}; a->b after heal {after:?}",
        during[0], during[1], during[2], during[3]
    );
    assert_eq!(during, ["timed out", "timed out", "ok", "ok"]);
    assert_eq!(stalled, 0);
    assert!(resumed);
    assert_eq!(after, "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_host_reaches_nobody_and_nobody_reaches_it_until_it_rejoins() {
    let Some(network) = Network::new() else {
        return;
    };
    let (a, b, runner) = (network.host("a"), network.host("b"), network.runner());
    let (_a_server, _b_server) = (serve(&a).await, serve(&b).await);

    network.isolate(&b);
    let to_b = connect(&a, b.socket(PORT), CONNECT_MS).await;
    let runner_to_b = connect(runner, b.socket(PORT), CONNECT_MS).await;
    // Past the ~3 s that ARP takes to give up.
    let from_b = connect(&b, a.socket(PORT), 6000).await;
    let still = connect(runner, a.socket(PORT), CONNECT_MS).await;

    network.rejoin(&b);
    let back = [
        connect(&a, b.socket(PORT), CONNECT_MS).await,
        connect(&b, a.socket(PORT), CONNECT_MS).await,
        connect(runner, b.socket(PORT), CONNECT_MS).await,
    ];
    eprintln!(
        "isolated b: a->b {to_b:?}, runner->b {runner_to_b:?}, b->a {from_b:?}, \
         runner->a {still:?}; rejoined: a->b, b->a, runner->b {back:?}"
    );
    assert_eq!(
        [to_b, runner_to_b, from_b, still],
        ["timed out", "timed out", "host unreachable", "ok"]
    );
    assert_eq!(back, ["ok", "ok", "ok"]);
}

/// How many datagrams `server` got from `from`.
fn datagrams_from(server: &ChildProcess, from: &Host) -> usize {
    let prefix = format!("{}:", from.addr());
    lines(server, "datagram")
        .iter()
        .filter(|line| {
            line["from"]
                .as_str()
                .is_some_and(|f| f.starts_with(&prefix))
        })
        .count()
}

async fn send_udp(from: &Host, to: &Host, count: u32) {
    let mut command = from.command(NETPROBE);
    command.args(["send-udp", &to.socket(PORT).to_string(), &count.to_string()]);
    let sent = tokio::process::Command::from(command)
        .output()
        .await
        .expect("run netprobe send-udp");
    assert!(sent.status.success(), "{sent:?}");
}

/// The last request `server` read from `from`'s stream, by sequence number.
fn last_request(server: &ChildProcess, from: &Host) -> Option<u64> {
    let prefix = format!("{}:", from.addr());
    lines(server, "received")
        .iter()
        .filter(|line| {
            line["from"]
                .as_str()
                .is_some_and(|f| f.starts_with(&prefix))
        })
        .filter_map(|line| line["data"].as_str()?.trim().lines().last()?.parse().ok())
        .max()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_way_cut_drops_one_direction_only() {
    let Some(network) = Network::new() else {
        return;
    };
    let (a, b) = (network.host("a"), network.host("b"));
    let (a_server, b_server) = (serve(&a).await, serve(&b).await);
    // b is the client of a server on a, as a caller of a service.
    let stream = stream(&b, &a).await;

    network.cut_one_way(&a, &b);
    tokio::time::sleep(SETTLE).await;
    send_udp(&a, &b, 20).await;
    send_udp(&b, &a, 20).await;
    let a_to_b = connect(&a, b.socket(PORT), CONNECT_MS).await;
    let b_to_a = connect(&b, a.socket(PORT), CONNECT_MS).await;
    let (udp_at_b, udp_at_a) = (datagrams_from(&b_server, &a), datagrams_from(&a_server, &b));
    let last_echo = lines(&stream, "echo")
        .last()
        .and_then(|l| l["seq"].as_u64());
    let last_received = last_request(&a_server, &b);

    network.heal(&a, &b);
    send_udp(&a, &b, 20).await;
    let at_cut = echoes(&stream);
    let resumed = wait_echoes(&stream, at_cut + 5, Duration::from_secs(15)).await;
    tokio::time::sleep(SETTLE).await;
    let udp_healed = datagrams_from(&b_server, &a) - udp_at_b;
    eprintln!(
        "cut a->b one way: UDP a->b {udp_at_b}/20 arrived, b->a {udp_at_a}/20; \
         connects a->b {a_to_b:?}, b->a {b_to_a:?}; b's stream to a: last answer #{last_echo:?}, \
         last request a's server read #{last_received:?}; healed: UDP a->b {udp_healed}/20, \
         stream resumed: {resumed}"
    );
    assert_eq!((udp_at_b, udp_at_a), (0, 20));
    assert_eq!(
        (a_to_b.as_str(), b_to_a.as_str()),
        ("timed out", "timed out")
    );
    // The request after the last answer reached the server; its answer was lost.
    assert_eq!(last_received, last_echo.map(|seq| seq + 1));
    assert_eq!(udp_healed, 20);
    assert!(resumed);
}

/// Whether `SELECT 1` works from the runner, within 5 s.
async fn runner_query(url: &str) -> Result<(), String> {
    let query = async {
        let mut connection = sqlx::PgConnection::connect(url).await?;
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut connection)
            .await?;
        assert_eq!(one, 1);
        connection.close().await
    };
    match tokio::time::timeout(Duration::from_secs(5), query).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// Whether `psql -c 'SELECT 1'` in `from` answers from the server.
async fn psql_from(from: &Host, server: &PrivatePostgres) -> bool {
    let mut command = from.command(server.program("psql"));
    command
        .args([
            "-h",
            &server.addr().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .args(["-U", "postgres", "-d", "postgres", "-tA", "-c", "SELECT 1"])
        .env("PGCONNECT_TIMEOUT", "2");
    let output = tokio::process::Command::from(command)
        .output()
        .await
        .expect("run psql");
    output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "1"
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_postgres_in_a_host_serves_the_network_and_not_across_a_cut() {
    let Some(network) = Network::new() else {
        return;
    };
    let (db, app) = (network.host("db"), network.host("app"));
    let Some(server) = PrivatePostgres::start_in(&db) else {
        return;
    };
    assert!(
        server.url().contains(&db.addr().to_string()),
        "{}",
        server.url()
    );
    let from_runner = runner_query(&server.url()).await;
    let from_app = psql_from(&app, &server).await;

    network.cut(&app, &db);
    let app_in_cut = psql_from(&app, &server).await;
    let runner_in_cut = runner_query(&server.url()).await;
    network.heal(&app, &db);
    let app_healed = psql_from(&app, &server).await;

    server.down();
    let runner_down = runner_query(&server.url()).await;
    server.up();
    let runner_up = runner_query(&server.url()).await;
    eprintln!(
        "PostgreSQL at {}: from the runner {from_runner:?}, from app {from_app}; \
         app<->db cut: app {app_in_cut}, runner {runner_in_cut:?}; healed: app {app_healed}; \
         server down: runner {runner_down:?}; up again: runner {runner_up:?}",
        server.url()
    );
    assert_eq!(from_runner, Ok(()));
    assert!(from_app);
    assert!(!app_in_cut);
    assert_eq!(runner_in_cut, Ok(()));
    assert!(app_healed);
    assert!(runner_down.is_err());
    assert_eq!(runner_up, Ok(()));
}
