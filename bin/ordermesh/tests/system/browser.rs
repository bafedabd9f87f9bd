//! The web page in a real headless Chromium (Debian's package): load it,
//! place an order, watch it reach CONFIRMED, and check a screenshot; its
//! Content-Security-Policy blocks nothing the page needs (no violation
//! event, no console message about it).
//!
//! Chromium is driven over the DevTools protocol on a websocket. Only three
//! commands are needed, so a few lines here replace a browser-automation
//! crate (and its download of its own browser, which this project forbids).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use ordermesh_testkit::tool;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Endpoints, TestApp, eventually};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium with one page, driven over DevTools.
struct Browser {
    _child: Child,
    _profile: tempfile::TempDir,
    socket: Socket,
    session: String,
    next_id: u64,
    /// Console messages, log entries and exceptions seen so far.
    console: Vec<String>,
}

impl Browser {
    async fn open(chromium: &Path, url: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-quic",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1200,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromium");
        // Chromium writes its DevTools port and browser path here when ready.
        let port_file = profile.path().join("DevToolsActivePort");
        let endpoint = eventually(Duration::from_secs(30), "chromium's DevTools port", || {
            let port_file = port_file.clone();
            async move {
                let text = std::fs::read_to_string(port_file).ok()?;
                let mut lines = text.lines();
                let port = lines.next()?.trim().to_owned();
                let path = lines.next()?.trim().to_owned();
                Some(format!("ws://127.0.0.1:{port}{path}"))
            }
        })
        .await;
        let (socket, _) = tokio_tungstenite::connect_async(endpoint.as_str())
            .await
            .expect("connect to DevTools");
        let mut browser = Self {
            _child: child,
            _profile: profile,
            socket,
            session: String::new(),
            next_id: 0,
            console: Vec::new(),
        };
        let target = browser
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        // Listen before the page loads: the console, the log (where
        // Chromium reports CSP refusals) and the page's own violation events.
        let session = Some(attached["sessionId"].as_str().unwrap().to_owned());
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            browser.call(session.as_deref(), domain, json!({})).await;
        }
        browser
            .call(
                session.as_deref(),
                "Page.addScriptToEvaluateOnNewDocument",
                json!({"source": "window.__violations = []; document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"}),
            )
            .await;
        browser
            .call(session.as_deref(), "Page.navigate", json!({"url": url}))
            .await;
        browser
    }

    /// Sends one command and waits for its answer (events are skipped).
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("send to DevTools");
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(frame) = self.socket.next().await {
                let Ok(Message::Text(text)) = frame else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["id"] == id {
                    return value;
                }
                match value["method"].as_str() {
                    Some("Runtime.consoleAPICalled") => self.console.push(format!(
                        "console.{}: {}",
                        value["params"]["type"].as_str().unwrap_or("?"),
                        value["params"]["args"]
                    )),
                    Some("Log.entryAdded") => self.console.push(format!(
                        "log {} {}: {}",
                        value["params"]["entry"]["source"].as_str().unwrap_or("?"),
                        value["params"]["entry"]["level"].as_str().unwrap_or("?"),
                        value["params"]["entry"]["text"].as_str().unwrap_or("?")
                    )),
                    Some("Runtime.exceptionThrown") => self.console.push(format!(
                        "exception: {}",
                        value["params"]["exceptionDetails"]
                    )),
                    _ => {}
                }
            }
            panic!("DevTools closed the connection");
        })
        .await
        .unwrap_or_else(|_| panic!("DevTools did not answer {method}"));
        assert!(answer["error"].is_null(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Evaluates `expression` in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let session = self.session.clone();
        let result = self
            .call(
                Some(&session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await;
        result["result"]["value"].clone()
    }

    async fn screenshot(&mut self) -> Vec<u8> {
        let session = self.session.clone();
        let shot = self
            .call(
                Some(&session),
                "Page.captureScreenshot",
                json!({"format": "png"}),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_places_an_order_and_follows_it_live() {
    let Some(chromium) = tool("chromium") else {
        return;
    };
    // The one-command mode: the page signs in through the development issuer.
    let system = TestApp::spawn(
        std::sync::Arc::new(ordermesh_testkit::TestDatabase::sqlite()),
        |settings| {
            settings.identity = ordermesh_identity::IdentitySettings::default();
        },
    )
    .await;
    let page = format!("http://{}/", system.gateway_addr());
    let mut browser = Browser::open(&chromium, &page).await;

    // The catalog arrives, and the stock stream goes live.
    let mug_stock = "(() => { const row = [...document.querySelectorAll('#catalog tr')].find(r => r.cells[0].textContent === 'sku-mug'); return row ? Number(row.cells[3].textContent) : null; })()";
    let stock_before = poll(&mut browser, mug_stock, |v| v.as_i64()).await;
    poll(
        &mut browser,
        "document.getElementById('stock-state').textContent",
        |v| (v.as_str()? == "(live)").then_some(()),
    )
    .await;

    // Sign in as alice; the page says who is signed in.
    browser
        .eval("document.getElementById('sign-in').click(); true")
        .await;
    poll(
        &mut browser,
        "document.getElementById('who').textContent",
        |v| (v.as_str()? == "Signed in as alice").then_some(()),
    )
    .await;

    // Place an order for two mugs through the form, as a person would.
    browser
        .eval("document.querySelector('#lines .line input').value = '2'; document.getElementById('place').click(); true")
        .await;
    let status = poll(
        &mut browser,
        "document.getElementById('current').dataset.status || null",
        |v| {
            let status = v.as_str()?;
            (status != "PENDING").then(|| status.to_owned())
        },
    )
    .await;
    assert_eq!(status, "CONFIRMED");

    // Live stock: the catalog shows the two mugs gone, without a reload.
    poll(&mut browser, mug_stock, |v| {
        (v.as_i64()? == stock_before - 2).then_some(())
    })
    .await;
    // The recent orders list has it.
    poll(
        &mut browser,
        "document.querySelectorAll('#recent tr').length",
        |v| (v.as_i64()? >= 1).then_some(()),
    )
    .await;

    // The policy let the page do all of that, and refused nothing.
    let violations = browser
        .eval("JSON.stringify(window.__violations || ['no listener'])")
        .await;
    assert_eq!(violations, json!("[]"), "CSP violations");
    let csp_messages: Vec<&String> = browser
        .console
        .iter()
        .filter(|line| {
            let line = line.to_ascii_lowercase();
            line.contains("content security policy") || line.contains("content-security-policy")
        })
        .collect();
    println!(
        "browser: {} console/log messages, {} about the CSP, violations {violations}",
        browser.console.len(),
        csp_messages.len()
    );
    assert!(csp_messages.is_empty(), "{csp_messages:?}");

    let png = browser.screenshot().await;
    let (width, height, distinct) = png_summary(&png);
    assert!(width >= 600 && height >= 400, "{width}x{height}");
    assert!(
        distinct > 8,
        "the screenshot looks blank: {distinct} distinct colours"
    );
    if let Ok(dir) = std::env::var("ORDERMESH_ARTIFACTS_DIR") {
        std::fs::write(Path::new(&dir).join("page.png"), &png).unwrap();
    }
}

/// Evaluates `expression` until `accept` takes its value, for at most 20 s.
async fn poll<T>(
    browser: &mut Browser,
    expression: &str,
    accept: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let value = browser.eval(expression).await;
        if let Some(accepted) = accept(&value) {
            return accepted;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "`{expression}` never reached the expected value; last: {value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Width, height and the number of distinct colours of a PNG.
fn png_summary(png: &[u8]) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let distinct: std::collections::HashSet<&[u8]> =
        pixels[..info.buffer_size()].chunks(channels).collect();
    (info.width, info.height, distinct.len())
}
