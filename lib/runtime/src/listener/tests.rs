//! The listener's limits, each met by a raw TCP client over loopback.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// Long enough for any test here to see its limit act.
const BOUND: Duration = Duration::from_secs(10);

struct Served {
    addr: std::net::SocketAddr,
    context: AppContext,
}

impl Served {
    fn closed(&self, reason: &str) -> u64 {
        self.context
            .metrics()
            .connections_closed_total
            .with_label_values(&["test", reason])
            .get()
    }

    fn refused(&self, reason: &str) -> u64 {
        self.context
            .metrics()
            .requests_refused_total
            .with_label_values(&["test", reason])
            .get()
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }
}

async fn serve_with(adjust: impl FnOnce(&mut ConnectionSettings)) -> Served {
    let mut settings = ConnectionSettings::default();
    adjust(&mut settings);
    let context = AppContext::for_tests();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = Router::new().route("/", get(|| async { "hello\n" }));
    let serving = context.clone();
    tokio::spawn(async move {
        serve(
            Listener {
                name: "test",
                socket: listener,
                protocols: Protocols::Http1AndHttp2,
            },
            router,
            &settings,
            &serving,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
    });
    Served { addr, context }
}

/// Reads until the server closes the connection; everything it sent.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut received))
        .await
        .expect("the server closed the connection within the bound")
        .ok();
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn half_a_request_head_is_closed_after_the_header_timeout() {
    let served = serve_with(|s| s.header_read_timeout = Duration::from_millis(300)).await;
    let mut stream = served.connect().await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    read_to_close(&mut stream).await;
    let closed = served.closed("header_timeout") + served.closed("first_request_timeout");
    assert_eq!(closed, 1, "counted as a header timeout");
}

#[tokio::test]
async fn a_silent_connection_and_an_http2_preface_alone_are_closed() {
    let served = serve_with(|s| s.header_read_timeout = Duration::from_millis(300)).await;
    let mut silent = served.connect().await;
    let mut preface_only = served.connect().await;
    preface_only
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    read_to_close(&mut silent).await;
    read_to_close(&mut preface_only).await;
    assert_eq!(served.closed("first_request_timeout"), 2);
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_once_idle() {
    let served = serve_with(|s| {
        s.header_read_timeout = Duration::from_secs(30);
        s.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut stream = served.connect().await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = read_to_close(&mut stream).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    assert!(answered.ends_with("hello\n"), "{answered}");
    assert_eq!(served.closed("idle"), 1);
}

#[tokio::test]
async fn a_long_url_is_414_and_too_many_headers_431() {
    let served = serve_with(|s| {
        s.max_uri_bytes = 64;
        s.max_headers = 10;
    })
    .await;
    let mut stream = served.connect().await;
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100));
    stream.write_all(long.as_bytes()).await.unwrap();
    let answered = read_to_close(&mut stream).await;
    assert!(answered.starts_with("HTTP/1.1 414"), "{answered}");
    assert_eq!(served.refused("uri_too_long"), 1);

    let mut stream = served.connect().await;
    let headers: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    stream.write_all(many.as_bytes()).await.unwrap();
    let answered = read_to_close(&mut stream).await;
    assert!(answered.starts_with("HTTP/1.1 431"), "{answered}");
}

#[tokio::test]
async fn a_head_over_the_byte_limit_is_431() {
    let served = serve_with(|s| s.max_header_bytes = 8 * 1024).await;
    let mut stream = served.connect().await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(16 * 1024)
    );
    // The server may answer and close before it has read all of it.
    let _ = stream.write_all(big.as_bytes()).await;
    let answered = read_to_close(&mut stream).await;
    assert!(answered.starts_with("HTTP/1.1 431"), "{answered}");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let served = serve_with(|s| s.max_connections = 2).await;
    let _first = served.connect().await;
    let _second = served.connect().await;
    // Each is counted once its task starts; wait for both.
    let open = served
        .context
        .metrics()
        .active_connections
        .with_label_values(&["test"]);
    tokio::time::timeout(BOUND, async {
        while open.get() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("two connections open");
    let mut third = served.connect().await;
    let answered = read_to_close(&mut third).await;
    assert_eq!(answered, "");
    assert_eq!(served.closed("over_limit"), 1);
}
