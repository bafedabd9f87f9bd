//! The real `curl` binary against the gateway, and a Prometheus scrape reader.
//!
//! The order API needs a bearer token. So that the tests of everything else
//! read as they did, a request to it that names no `Authorization` header
//! of its own gets one here: the body's customer's for a JSON body with a
//! `customerId`, an operator's (`orders:admin`) otherwise.
//! A test of identity names its own header, or `-H "Authorization:"` to
//! send none. The tokens are the test issuer's, or, for an address
//! registered with [`use_dev_issuer`] (Envoy in front of a system that runs
//! the development issuer, as the shipped Envoy configs expect), that
//! issuer's.

use std::net::SocketAddr;
use std::process::{Command, Stdio};

use ordermesh_testkit::{tokens, tool};

/// What `curl -i` printed: the final status line, headers and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self.json()
    }
}

/// Whether the `curl` binary is there (skips or fails as testkit says).
pub fn available() -> bool {
    tool("curl").is_some()
}

/// `curl -sS -i ARGS...` over HTTP/1.1, bounded to 30 s.
pub fn curl(args: &[&str]) -> Response {
    curl_with_input(args, None)
}

/// Addresses that speak HTTPS (the Envoy edge), with the CA file that
/// signed their certificate: [`url`] names them `https://`, and [`curl`]
/// trusts that CA for them (`--cacert`), and no other.
static TLS: std::sync::Mutex<Vec<(String, std::path::PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// `addr` speaks HTTPS with a certificate `ca` signed.
pub fn use_tls(addr: SocketAddr, ca: &std::path::Path) {
    TLS.lock().unwrap().push((addr.to_string(), ca.to_owned()));
}

/// `addr` no longer speaks HTTPS (its Envoy stopped; the port may be reused).
pub fn forget_tls(addr: SocketAddr) {
    TLS.lock()
        .unwrap()
        .retain(|(known, _)| *known != addr.to_string());
}

fn tls_ca(authority: &str) -> Option<std::path::PathBuf> {
    TLS.lock()
        .unwrap()
        .iter()
        .find(|(addr, _)| addr == authority)
        .map(|(_, ca)| ca.clone())
}

/// The `host:port/path` of a URL argument, if it is one.
fn after_scheme(arg: &str) -> Option<&str> {
    arg.strip_prefix("http://")
        .or_else(|| arg.strip_prefix("https://"))
}

/// Addresses whose tokens come from a development issuer, by its data dir.
static DEV_ISSUERS: std::sync::Mutex<Vec<(String, std::path::PathBuf)>> =
    std::sync::Mutex::new(Vec::new());

/// Requests to `addr` get tokens of the development issuer kept in `data_dir`.
pub fn use_dev_issuer(addr: SocketAddr, data_dir: &std::path::Path) {
    DEV_ISSUERS
        .lock()
        .unwrap()
        .push((addr.to_string(), data_dir.to_owned()));
}

/// A token for `customer` (or an operator's, for None) as the target of
/// `args` trusts it.
fn token_for(args: &[&str], customer: Option<&str>) -> String {
    let target = args
        .iter()
        .find_map(|arg| after_scheme(arg))
        .unwrap_or_default();
    let dev = DEV_ISSUERS
        .lock()
        .unwrap()
        .iter()
        .find(|(addr, _)| target.starts_with(&format!("{addr}/")))
        .map(|(_, dir)| dir.clone());
    match (dev, customer) {
        (Some(dir), customer) => {
            let issuer = ordermesh_identity::DevIssuer::load_or_create(&dir)
                .expect("the development issuer's key");
            let scope = customer.is_none().then_some("orders:admin");
            issuer
                .issue(
                    customer.unwrap_or("test-operator"),
                    scope,
                    std::time::Duration::from_secs(600),
                )
                .expect("a development token")
        }
        (None, Some(customer)) => tokens::customer(customer),
        (None, None) => tokens::admin("test-operator"),
    }
}

/// Whether a curl command line names an `Authorization` header.
fn names_authorization(args: &[&str]) -> bool {
    args.windows(2)
        .any(|pair| pair[0] == "-H" && pair[1].to_ascii_lowercase().starts_with("authorization:"))
}

/// The `customerId` of a JSON body given on the command line, if any.
fn body_customer(args: &[&str]) -> Option<String> {
    args.windows(2)
        .filter(|pair| matches!(pair[0], "-d" | "--data" | "--data-binary" | "--data-raw"))
        .filter_map(|pair| serde_json::from_str::<serde_json::Value>(pair[1]).ok())
        .find_map(|body| {
            // Either spelling, as the gateway accepts both.
            let customer = body.get("customerId").or_else(|| body.get("customer_id"));
            customer.and_then(|c| c.as_str()).map(str::to_owned)
        })
        // A customer id no issuer would sign (a test of oversized input).
        .filter(|customer| customer.len() <= 128)
}

/// Whether the command's target is the order API (REST or grpc-web).
fn targets_orders(args: &[&str]) -> bool {
    args.iter().any(|arg| {
        after_scheme(arg).is_some()
            && (arg.contains("/v1/orders") || arg.contains("/ordermesh.order.v1.OrderService/"))
    })
}

/// As [`curl`], with `input` on stdin (for `--data-binary @-`).
pub fn curl_with_input(args: &[&str], input: Option<&[u8]>) -> Response {
    let curl = tool("curl").expect("checked by the caller");
    // A body naming its customer is placed as that customer; anything
    // else is an operator's call.
    let token = token_for(args, body_customer(args).as_deref());
    let authorization = format!("Authorization: Bearer {token}");
    let mut args = args.to_vec();
    if targets_orders(&args) && !names_authorization(&args) {
        args.splice(0..0, ["-H", authorization.as_str()]);
    }
    let ca = args
        .iter()
        .filter_map(|arg| arg.strip_prefix("https://"))
        .find_map(|rest| tls_ca(rest.split('/').next().unwrap_or_default()))
        .map(|ca| ca.display().to_string());
    if let Some(ca) = &ca {
        args.splice(0..0, ["--cacert", ca.as_str()]);
    }
    let args = args.as_slice();
    let mut child = Command::new(curl)
        // `Expect:` off: no `100 Continue` block before the real one.
        .args([
            "-sS",
            "-i",
            "--http1.1",
            "--max-time",
            "30",
            "-H",
            "Expect:",
        ])
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    if let Some(input) = input {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write curl's stdin");
    }
    let output = child.wait_with_output().expect("wait for curl");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&output.stdout)
}

fn parse(mut raw: &[u8]) -> Response {
    loop {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a header block");
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        raw = &raw[end + 4..];
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        if status == 100 {
            continue;
        }
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        return Response {
            status,
            headers,
            body: raw.to_vec(),
        };
    }
}

/// Whether `curl -sf URL` succeeds (2xx) within 2 s.
pub fn probe(target: &str) -> bool {
    let Some(curl) = tool("curl") else {
        return false;
    };
    Command::new(curl)
        .args(["-sf", "--max-time", "2", "-o", "/dev/null", target])
        .status()
        .is_ok_and(|s| s.success())
}

/// The body of a GET (empty when it fails), for admin pages and metrics.
pub fn get_text(target: &str) -> String {
    let Some(curl) = tool("curl") else {
        return String::new();
    };
    Command::new(curl)
        .args(["-s", "--max-time", "5", target])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `POST` of `body` as JSON to `path`, with extra `headers` ("name: value").
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
    headers: &[&str],
) -> Response {
    let body = body.to_string();
    let target = url(addr, path);
    let mut args = vec![
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        &body,
    ];
    for header in headers {
        args.extend(["-H", header]);
    }
    args.push(&target);
    curl(&args)
}

pub fn url(addr: SocketAddr, path: &str) -> String {
    let scheme = match tls_ca(&addr.to_string()) {
        Some(_) => "https",
        None => "http",
    };
    format!("{scheme}://{addr}{path}")
}

/// The value of one sample in a Prometheus text exposition, e.g.
/// `requests_total{code="OK",method="/x",service="order"}`; 0 when absent.
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .filter(|(series, _)| {
            series.starts_with(&format!("{name}{{"))
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().expect("a number"))
        .sum()
}
