//! Clients that misbehave on purpose: raw HTTP/1.1 from a chosen source
//! address, and hand-written HTTP/2 frames (no client library sends a
//! rapid-reset or CONTINUATION flood).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Longest any hostile exchange here may take before the test fails.
pub const BOUND: Duration = Duration::from_secs(20);

/// A connection from `source` (127.0.0.x: each is a different client).
pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind the source address");
    socket.connect(addr).await.expect("connect")
}

pub fn client(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

/// Reads a response head (status line and headers).
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(BOUND, async {
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
    })
    .await
    .expect("a response head within the bound");
    String::from_utf8_lossy(&head).into_owned()
}

/// Sends `request` as written and reads until the server closes.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it has read all of it.
    let _ = stream.write_all(request).await;
    read_to_close(&mut stream).await.0
}

/// Everything the server sends until it closes, and how long that took.
pub async fn read_to_close(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    tokio::time::timeout(BOUND, stream.read_to_end(&mut received))
        .await
        .expect("the server closed the connection within the bound")
        .ok();
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

/// A GET whose response head is returned; the connection stays open.
pub async fn get_from(
    source: IpAddr,
    addr: SocketAddr,
    path: &str,
    token: &str,
) -> (TcpStream, String) {
    let mut stream = connect_from(source, addr).await;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    let head = read_head(&mut stream).await;
    (stream, head)
}

/// HTTP/2 frames, written by hand.
pub mod h2 {
    pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    const CONTINUATION: u8 = 0x9;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let length = u32::try_from(payload.len()).expect("frame length");
        let mut frame = length.to_be_bytes()[1..].to_vec();
        frame.extend([kind, flags]);
        frame.extend(stream.to_be_bytes());
        frame.extend(payload);
        frame
    }

    /// The preface and an empty SETTINGS frame.
    pub fn hello() -> Vec<u8> {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        bytes
    }

    /// A request's header block, HPACK-encoded: `:method POST`, `:scheme
    /// http`, `:path /`, `:authority x` (static-table references and one
    /// literal).
    fn request_block() -> Vec<u8> {
        vec![0x83, 0x86, 0x84, 0x41, 0x01, b'x']
    }

    /// `count` requests, each reset by the client at once (CVE-2023-44487).
    pub fn rapid_reset(count: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        for n in 0..count {
            let stream = 2 * n + 1;
            bytes.extend(frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                stream,
                &request_block(),
            ));
            // CANCEL
            bytes.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
        }
        bytes
    }

    /// A request's headers that never end: HEADERS without END_HEADERS,
    /// then `count` CONTINUATION frames of 16 KiB of literal headers.
    pub fn continuation_flood(count: usize) -> Vec<u8> {
        let mut bytes = frame(HEADERS, 0, 1, &request_block());
        // A literal header `x: a…` (a new name, not indexed; a value of
        // 100 bytes), repeated.
        let mut chunk = Vec::new();
        while chunk.len() < 16_000 {
            chunk.extend([0x00, 0x01, b'x', 100]);
            chunk.extend([b'a'; 100]);
        }
        for _ in 0..count {
            bytes.extend(frame(CONTINUATION, 0, 1, &chunk));
        }
        bytes
    }

    /// Whether `received` holds a GOAWAY frame (scanning frame by frame).
    pub fn has_goaway(received: &[u8]) -> bool {
        let mut rest = received;
        while rest.len() >= 9 {
            let length =
                usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            if rest[3] == GOAWAY {
                return true;
            }
            let Some(next) = rest.get(9 + length..) else {
                return false;
            };
            rest = next;
        }
        false
    }
}
