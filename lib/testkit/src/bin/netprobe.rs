//! `netprobe`: the small TCP and UDP peer the hosts tests run inside hosts
//! (a test process cannot enter a namespace itself without unsafe setns).
//! Every report is a JSON line on stdout, in the shape `ChildProcess` reads.
//!
//! ```text
//! netprobe serve ADDR           TCP echo and UDP sink on ADDR (port 0: any);
//!                               a "received" line per TCP read (with its
//!                               text) and a
//!                               "datagram" line per datagram
//! netprobe connect ADDR MS      one TCP handshake within MS ms; exit 0 when
//!                               it completed
//! netprobe stream ADDR MS       one connection, a round trip every MS ms,
//!                               an "echo" line per answer, until killed
//! netprobe send-udp ADDR COUNT  COUNT datagrams to ADDR
//! ```

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["serve", addr] => serve(parse(addr)),
        ["connect", addr, ms] => return connect(parse(addr), millis(ms)),
        ["stream", addr, ms] => stream(parse(addr), millis(ms)),
        ["send-udp", addr, count] => send_udp(parse(addr), count.parse().unwrap_or(1)),
        _ => {
            eprintln!("usage: netprobe serve|connect|stream|send-udp ADDR [MS|COUNT]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report(json!({"msg": "failed", "error": format!("{error:#}")}));
            ExitCode::FAILURE
        }
    }
}

fn parse(addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or_else(|_| panic!("{addr:?} is not an address"))
}

fn millis(ms: &str) -> Duration {
    Duration::from_millis(ms.parse().unwrap_or(1000))
}

fn report(line: serde_json::Value) {
    println!("{line}");
}

/// What a failed socket call amounts to, in the words the docs use.
fn outcome(error: &std::io::Error) -> String {
    match error.kind() {
        // A read timeout is WouldBlock on Unix.
        ErrorKind::TimedOut | ErrorKind::WouldBlock => "timed out".to_owned(),
        ErrorKind::ConnectionRefused => "refused".to_owned(),
        ErrorKind::HostUnreachable => "host unreachable".to_owned(),
        ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
        ErrorKind::ConnectionReset => "reset".to_owned(),
        _ => error.to_string(),
    }
}

fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    let bound = listener.local_addr()?;
    let udp = UdpSocket::bind(bound).with_context(|| format!("binding udp {bound}"))?;
    report(json!({"msg": "listening", "role": "tcp", "addr": bound.to_string()}));
    report(json!({"msg": "listening", "role": "udp", "addr": bound.to_string()}));
    std::thread::spawn(move || {
        for connection in listener.incoming().flatten() {
            std::thread::spawn(move || echo(connection));
        }
    });
    let mut buffer = [0; 2048];
    loop {
        let (bytes, from) = udp.recv_from(&mut buffer)?;
        report(json!({"msg": "datagram", "from": from.to_string(), "bytes": bytes}));
    }
}

fn echo(mut connection: TcpStream) {
    let from = connection
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut buffer = [0; 2048];
    while let Ok(bytes @ 1..) = connection.read(&mut buffer) {
        let data = String::from_utf8_lossy(&buffer[..bytes]);
        report(json!({"msg": "received", "from": from, "data": data}));
        if connection.write_all(&buffer[..bytes]).is_err() {
            return;
        }
    }
}

fn connect(addr: SocketAddr, limit: Duration) -> ExitCode {
    match TcpStream::connect_timeout(&addr, limit) {
        Ok(_) => {
            report(json!({"msg": "connect", "to": addr.to_string(), "outcome": "ok"}));
            ExitCode::SUCCESS
        }
        Err(error) => {
            let outcome = outcome(&error);
            report(json!({"msg": "connect", "to": addr.to_string(), "outcome": outcome}));
            ExitCode::FAILURE
        }
    }
}

/// Blocking reads with no timeout: a stalled connection stays stalled until
/// TCP delivers again, which is what the tests watch.
fn stream(addr: SocketAddr, every: Duration) -> anyhow::Result<()> {
    let connection = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    report(json!({"msg": "connected", "to": addr.to_string()}));
    let mut writer = connection.try_clone()?;
    let mut reader = BufReader::new(connection);
    for seq in 0u64.. {
        writer.write_all(format!("{seq}\n").as_bytes())?;
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("{addr} closed the connection");
        }
        report(json!({"msg": "echo", "seq": seq}));
        std::thread::sleep(every);
    }
    Ok(())
}

fn send_udp(addr: SocketAddr, count: u32) -> anyhow::Result<()> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    for seq in 0..count {
        if let Err(error) = socket.send_to(seq.to_string().as_bytes(), addr) {
            report(json!({"msg": "send", "seq": seq, "outcome": outcome(&error)}));
        }
    }
    report(json!({"msg": "sent", "count": count}));
    Ok(())
}
