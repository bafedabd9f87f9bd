//! HTTP/2 floods against the gateway and a gRPC service: h2 has the fixes
//! (rapid reset, CVE-2023-44487; CONTINUATION, 2024); these prove the
//! listener's settings keep them, and that the service goes on answering.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::raw::{BOUND, h2};
use super::{bystander_reads, metrics_text, p99};
use crate::harness::{Role, TestApp};

/// Sends `flood` (after the preface) and reads until the server closes;
/// what it sent back, and how many bytes of the flood went out.
async fn flood(addr: std::net::SocketAddr, flood: Vec<u8>) -> (Vec<u8>, usize) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let total = flood.len();
    let writing = tokio::spawn(async move {
        let mut sent = 0;
        writer.write_all(&h2::hello()).await.ok();
        for chunk in flood.chunks(16 * 1024) {
            if writer.write_all(chunk).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let mut received = Vec::new();
    tokio::time::timeout(BOUND, reader.read_to_end(&mut received))
        .await
        .expect("the server ended the connection within the bound")
        .ok();
    // The writer stops on its own once the socket is closed.
    let sent = tokio::time::timeout(Duration::from_secs(5), writing)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    println!(
        "  flood of {total} bytes: {sent} sent before the close, {} received",
        received.len()
    );
    (received, sent)
}

#[tokio::test(flavor = "multi_thread")]
async fn rapid_reset_and_continuation_floods_end_the_connection() {
    let system = TestApp::sqlite().await;
    let quiet = p99(bystander_reads(&system).await);
    for (name, addr) in [
        ("gateway", system.addr(Role::Gateway)),
        ("inventory", system.addr(Role::Inventory)),
    ] {
        println!("{name}: 20000 requests reset at once");
        let ((received, _), during) = tokio::join!(
            flood(addr, h2::rapid_reset(20_000)),
            bystander_reads(&system)
        );
        println!(
            "  a bystander's product read p99: {quiet:?} quiet, {:?} during the flood",
            p99(during)
        );
        assert!(
            h2::has_goaway(&received),
            "{name} sent no GOAWAY to a rapid reset"
        );
        println!("{name}: 4096 CONTINUATION frames of 16 KB");
        let ((_, sent), during) = tokio::join!(
            flood(addr, h2::continuation_flood(4096)),
            bystander_reads(&system)
        );
        println!(
            "  a bystander's product read p99: {quiet:?} quiet, {:?} during the flood",
            p99(during)
        );
        assert!(
            sent < 4096 * 16_009,
            "{name} read a 64 MB header block to its end"
        );
    }
    let text = metrics_text(&system).await;
    for name in ["gateway", "inventory"] {
        let line =
            format!("connections_closed_total{{reason=\"protocol_error\",service=\"{name}\"}}");
        let closed = super::metric(&text, &line);
        println!("{name}: {closed} connections closed for protocol errors");
    }
    bystander_reads(&system).await;
}
