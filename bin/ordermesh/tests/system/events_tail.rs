//! `orderctl events tail --source gateway` as a real process: the gateway's
//! SSE feed printed as the NATS source prints it, and a dropped connection
//! resumed with `Last-Event-ID`, nothing missed and nothing twice.

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordermesh_app::Role;
use ordermesh_testkit::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{connect, order_client, order_request, sibling_binary, wait_terminal};

/// `orderctl events tail --source gateway` against `gateway` with an
/// operator's token and `args`, its stdout and stderr piped.
pub fn spawn_tail(gateway: SocketAddr, args: &[&str]) -> Child {
    let config = tempfile::tempdir().expect("a config dir");
    Command::new(sibling_binary("orderctl"))
        .env("ORDERCTL_CONFIG_DIR", config.path())
        .env_remove("ORDERCTL_TOKEN")
        .args(["--gateway-url", &format!("http://{gateway}")])
        .args([
            "--token",
            &ordermesh_testkit::tokens::admin("tail-operator"),
        ])
        .args(["events", "tail", "--source", "gateway"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run orderctl")
}

/// The child's stdout lines, as they come, on a channel.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    receive
}

/// The next `count` lines, each within 20 s.
fn next_lines(lines: &std::sync::mpsc::Receiver<String>, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("line {} of {count} within 20 s", i + 1))
        })
        .collect()
}

/// The child's output once it ends, within 20 s.
fn ended(mut child: Child) -> std::process::Output {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("orderctl events tail did not finish in 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// Waits (at most 20 s) for the child to end well; its stderr.
fn finished(child: Child) -> String {
    let output = ended(child);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "orderctl failed: {stderr}");
    stderr
}

/// `orderctl events tail --source gateway` with `args` (a `--count` among
/// them), run to its end; its stdout lines.
pub fn tail_gateway(gateway: SocketAddr, args: &[&str]) -> Vec<String> {
    let mut child = spawn_tail(gateway, args);
    let lines = lines_of(&mut child);
    finished(child);
    // Every line, not only those the reader thread has passed on by now:
    // the child has exited, so its stdout ends and the channel closes.
    lines.iter().collect()
}

/// A TCP relay to `target` that keeps each connection's request head and
/// drops every open connection when told to, as a restarted proxy or a
/// broken network would. Told to rewind, it asks the gateway to resume
/// from an earlier `Last-Event-ID` than the client sent, so events the
/// client has already seen come again (the feed is at-least-once).
struct Relay {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    rewind_to: Arc<Mutex<Option<String>>>,
    cut: tokio::sync::watch::Sender<u32>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let heads = Arc::new(Mutex::new(Vec::new()));
        let rewind_to: Arc<Mutex<Option<String>>> = Arc::default();
        let (cut, _) = tokio::sync::watch::channel(0);
        let (kept, rewind, cuts) = (heads.clone(), rewind_to.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (heads, rewind, mut cut) = (kept.clone(), rewind.clone(), cuts.subscribe());
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut buffer = [0u8; 4096];
                        match client.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => head.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    heads.lock().unwrap().push(head.clone());
                    let forwarded = match rewind.lock().unwrap().as_deref() {
                        Some(earlier) => with_last_event_id(&head, earlier),
                        None => head,
                    };
                    if server.write_all(forwarded.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            addr,
            heads,
            rewind_to,
            cut,
        }
    }

    /// From now on, a request resuming after an event resumes after `id`.
    fn rewind_to(&self, id: &str) {
        *self.rewind_to.lock().unwrap() = Some(id.to_owned());
    }

    /// Drops every connection open now; new ones are relayed again.
    fn cut(&self) {
        self.cut.send_modify(|cuts| *cuts += 1);
    }

    /// The `Last-Event-ID` of each connection's request, in order.
    fn last_event_ids(&self) -> Vec<Option<String>> {
        self.heads
            .lock()
            .unwrap()
            .iter()
            .map(|head| {
                head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("last-event-id")
                        .then(|| value.trim().to_owned())
                })
            })
            .collect()
    }
}

/// `head` with its `Last-Event-ID` (if it has one) set to `id`.
fn with_last_event_id(head: &str, id: &str) -> String {
    head.split("\r\n")
        .map(|line| match line.split_once(':') {
            Some((name, _)) if name.eq_ignore_ascii_case("last-event-id") => {
                format!("{name}: {id}")
            }
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// The event ids of `--json` lines.
fn event_ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            value["eventId"].as_str().expect("an id").to_owned()
        })
        .collect()
}

/// The ids of the first `count` order events, from the order service's own
/// watch over gRPC.
async fn outbox_event_ids(app: &TestApp, count: usize) -> Vec<String> {
    use ordermesh_proto::events::v1::event_service_client::EventServiceClient;
    use ordermesh_proto::events::v1::{WatchEventsRequest, watch_events_response};
    let channel = connect(app.addr(Role::Order)).await;
    let mut events =
        EventServiceClient::with_interceptor(channel, crate::harness::OperatorUnlessGiven);
    let mut stream = events
        .watch_events(WatchEventsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    crate::events_watch::next_events(&mut stream, count)
        .await
        .into_iter()
        .map(|event| match event.event {
            Some(watch_events_response::Event::Order(order)) => {
                order.header.expect("a header").event_id
            }
            other => panic!("an order event: {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_through_the_gateway_resumes_after_a_dropped_connection() {
    let app = TestApp::sqlite().await;
    let mut orders = order_client(connect(app.addr(Role::Order)).await);
    let mut place = async |token: &str| {
        let order = orders
            .create_order(order_request("events-tail-sse", &[("sku-mug", 1)], token))
            .await
            .expect("placed")
            .into_inner();
        wait_terminal(&mut orders, &order.order_id, Duration::from_secs(20)).await;
    };
    place("pm_card_visa").await;
    place("pm_card_chargeDeclined").await;

    let relay = Relay::start(app.addr(Role::Gateway)).await;
    let mut child = spawn_tail(relay.addr, &["--json", "--count", "8"]);
    let lines = lines_of(&mut child);
    let mut printed = next_lines(&lines, 4);
    // The feed breaks, and resumes earlier than asked: events 3 and 4 come
    // again. Two more orders are placed while the tail reconnects.
    relay.rewind_to("2");
    relay.cut();
    place("pm_card_visa").await;
    place("pm_card_chargeDeclined").await;
    printed.extend(next_lines(&lines, 4));
    let stderr = finished(child);

    // The outbox's events in order, as the order service's own watch has
    // them: the tail printed each once, none missed.
    assert_eq!(event_ids(&printed), outbox_event_ids(&app, 8).await);
    let distinct: std::collections::HashSet<String> = event_ids(&printed).into_iter().collect();
    assert_eq!(distinct.len(), 8, "nothing twice");
    // A tail that never dropped prints the same lines.
    let unbroken = tail_gateway(app.addr(Role::Gateway), &["--json", "--count", "8"]);
    assert_eq!(printed, unbroken);
    // The first connection from the start, the next after the 4th event,
    // the last one printed.
    let resumed_after = relay.last_event_ids();
    assert_eq!(resumed_after[0], None);
    assert_eq!(
        resumed_after.get(1),
        Some(&Some("4".to_owned())),
        "{stderr}"
    );
    assert!(stderr.contains("again in"), "{stderr}");

    // Text, as the NATS source prints it.
    let text = tail_gateway(app.addr(Role::Gateway), &["--count", "4"]);
    assert!(
        text[0].starts_with("ordermesh.orders.placed ord_") && text[0].ends_with(" #1 PENDING"),
        "{text:?}"
    );
    assert!(text[3].ends_with(" #2 FAILED CARD_DECLINED"), "{text:?}");
    let stock = tail_gateway(
        app.addr(Role::Gateway),
        &["--stream", "stock", "--count", "1"],
    );
    assert!(
        stock[0].starts_with("ordermesh.stock.changed sku-mug #1 available="),
        "{stock:?}"
    );
    eprintln!(
        "orderctl through the gateway: {} lines, connections resumed after {resumed_after:?}; stderr: {stderr}",
        printed.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_through_the_gateway_refuses_a_customer_at_once() {
    let app = TestApp::sqlite().await;
    let child = Command::new(sibling_binary("orderctl"))
        .env_remove("ORDERCTL_TOKEN")
        .args([
            "--gateway-url",
            &format!("http://{}", app.addr(Role::Gateway)),
        ])
        .args([
            "--token",
            &ordermesh_testkit::tokens::customer("tail-customer"),
        ])
        .args(["events", "tail", "--source", "gateway", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run orderctl");
    let output = ended(child);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("HTTP 403"), "{stderr}");
    assert!(stderr.contains("orderctl login --admin"), "{stderr}");
    assert!(
        !stderr.contains("again in"),
        "no retry of a refusal: {stderr}"
    );
}
