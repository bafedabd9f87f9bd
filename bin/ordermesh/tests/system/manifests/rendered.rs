//! An overlay as `kubectl kustomize` renders it, read into what a kubelet
//! needs to run its pods: each Deployment's one container (command, args,
//! env sources, ports, probes, mounts, security context) and its volumes,
//! the ConfigMaps, the Services and which Deployments Flagger runs as a
//! primary. A field the test cannot honour exactly (an env source, a
//! volume type, a probe kind it does not know) panics rather than being
//! skipped, so the manifests cannot outgrow the test unnoticed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_norway::Value;

/// One rendered overlay.
pub struct Rendered {
    pub deployments: Vec<Deployment>,
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    pub services: Vec<Service>,
    /// Deployments a Flagger Canary targets: Flagger runs their pods as
    /// `<name>-primary` (the `app` label renamed), which the apex Services
    /// select.
    pub canary_targets: Vec<String>,
}

pub struct Deployment {
    pub name: String,
    pub pod_labels: BTreeMap<String, String>,
    pub pod_annotations: BTreeMap<String, String>,
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub fs_group: Option<u32>,
    pub run_as_non_root: bool,
    pub termination_grace_seconds: u64,
    pub container: Container,
    pub volumes: BTreeMap<String, Volume>,
}

pub struct Container {
    pub image: String,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub env_from: Vec<EnvFrom>,
    pub env: Vec<(String, EnvValue)>,
    /// containerPort by port name (unnamed ports under their number).
    pub ports: BTreeMap<String, u16>,
    /// (kind, probe, timeoutSeconds) for each declared probe.
    pub probes: Vec<(&'static str, Probe, u64)>,
    pub mounts: Vec<Mount>,
    pub read_only_root: bool,
    pub pre_stop_sleep_seconds: Option<u64>,
    /// `resources.limits.memory` as written (e.g. 256Mi).
    pub memory_limit: Option<String>,
}

pub enum EnvFrom {
    ConfigMap(String),
    Secret(String),
}

pub enum EnvValue {
    Literal(String),
    ConfigMapKey {
        name: String,
        key: String,
    },
    SecretKey {
        name: String,
        key: String,
    },
    /// `fieldRef`'s path, e.g. `metadata.name`.
    Field(String),
}

#[derive(Clone, Debug)]
pub enum Probe {
    Grpc { port: u16, service: String },
    HttpGet { port: PortRef, path: String },
    TcpSocket { port: PortRef },
}

/// A probe's or Service's port: a number, or a containerPort's name.
#[derive(Clone, Debug)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl PortRef {
    fn read(value: &Value) -> Self {
        match value {
            Value::Number(n) => Self::Number(port_number(n.as_u64())),
            Value::String(name) => Self::Name(name.clone()),
            other => panic!("a port must be a number or a name: {other:?}"),
        }
    }

    /// The containerPort it names in `ports`; None if nobody declares it.
    pub fn resolve(&self, ports: &BTreeMap<String, u16>) -> Option<u16> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Name(name) => ports.get(name).copied(),
        }
    }
}

pub struct Mount {
    pub volume: String,
    pub path: String,
    pub read_only: bool,
}

pub enum Volume {
    EmptyDir,
    Secret(String),
    ConfigMap(String),
}

pub struct Service {
    pub name: String,
    pub selector: BTreeMap<String, String>,
    /// (port, targetPort) pairs.
    pub ports: Vec<(u16, PortRef)>,
}

/// `kubectl kustomize` of `overlay` (a folder under the workspace root).
pub fn render(root: &Path, overlay: &str) -> Rendered {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(root.join(overlay))
        .output()
        .expect("run kubectl kustomize");
    assert!(
        output.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&String::from_utf8_lossy(&output.stdout))
}

pub fn parse(yaml: &str) -> Rendered {
    let mut rendered = Rendered {
        deployments: Vec::new(),
        config_maps: BTreeMap::new(),
        services: Vec::new(),
        canary_targets: Vec::new(),
    };
    // kustomize separates documents with a bare `---` line.
    for document in yaml.split("\n---\n") {
        let doc: Value = serde_norway::from_str(document).expect("rendered YAML");
        let name = text(&doc["metadata"]["name"]);
        match doc["kind"].as_str() {
            Some("Deployment") => rendered.deployments.push(deployment(&doc)),
            Some("ConfigMap") => {
                rendered.config_maps.insert(name, strings(&doc["data"]));
            }
            Some("Service") => rendered.services.push(Service {
                name,
                selector: strings(&doc["spec"]["selector"]),
                ports: list(&doc["spec"]["ports"])
                    .iter()
                    .map(|p| {
                        let port = port_number(p["port"].as_u64());
                        let target = match &p["targetPort"] {
                            Value::Null => PortRef::Number(port),
                            target => PortRef::read(target),
                        };
                        (port, target)
                    })
                    .collect(),
            }),
            Some("Canary") => {
                let target = &doc["spec"]["targetRef"];
                assert_eq!(target["kind"].as_str(), Some("Deployment"), "{name}");
                rendered.canary_targets.push(text(&target["name"]));
            }
            _ => {}
        }
    }
    rendered
}

fn deployment(doc: &Value) -> Deployment {
    let name = text(&doc["metadata"]["name"]);
    let pod = &doc["spec"]["template"];
    let spec = &pod["spec"];
    let containers = list(&spec["containers"]);
    assert!(
        containers.len() == 1 && list(&spec["initContainers"]).is_empty(),
        "{name}: the test runs pods of exactly one container"
    );
    let c = &containers[0];
    let security = &spec["securityContext"];
    let own = &c["securityContext"];
    let field = |key: &str| own[key].as_u64().or_else(|| security[key].as_u64());
    let id = |key: &str| field(key).map(|v| u32::try_from(v).expect("an id"));
    Deployment {
        run_as_user: id("runAsUser"),
        run_as_group: id("runAsGroup"),
        fs_group: security["fsGroup"]
            .as_u64()
            .map(|v| u32::try_from(v).expect("an id")),
        run_as_non_root: own["runAsNonRoot"]
            .as_bool()
            .or(security["runAsNonRoot"].as_bool())
            .unwrap_or(false),
        termination_grace_seconds: spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30),
        pod_labels: strings(&pod["metadata"]["labels"]),
        pod_annotations: strings(&pod["metadata"]["annotations"]),
        container: container(&name, c),
        volumes: list(&spec["volumes"])
            .iter()
            .map(|v| (text(&v["name"]), volume(&name, v)))
            .collect(),
        name,
    }
}

fn container(deployment: &str, c: &Value) -> Container {
    let words = |v: &Value| match v {
        Value::Null => None,
        v => Some(list(v).iter().map(text).collect::<Vec<_>>()),
    };
    let probes = [
        ("startupProbe", "startup"),
        ("readinessProbe", "readiness"),
        ("livenessProbe", "liveness"),
    ]
    .into_iter()
    .filter(|(key, _)| !c[*key].is_null())
    .map(|(key, kind)| {
        let timeout = c[key]["timeoutSeconds"].as_u64().unwrap_or(1);
        (kind, probe(deployment, &c[key]), timeout)
    })
    .collect();
    let pre_stop = &c["lifecycle"]["preStop"];
    assert!(
        pre_stop.is_null() || !pre_stop["sleep"].is_null(),
        "{deployment}: only a preStop `sleep` can run here (the image has no shell)"
    );
    Container {
        image: text(&c["image"]),
        command: words(&c["command"]),
        args: words(&c["args"]),
        env_from: list(&c["envFrom"])
            .iter()
            .map(|source| {
                if !source["configMapRef"].is_null() {
                    EnvFrom::ConfigMap(text(&source["configMapRef"]["name"]))
                } else if !source["secretRef"].is_null() {
                    EnvFrom::Secret(text(&source["secretRef"]["name"]))
                } else {
                    panic!("{deployment}: an envFrom source the test does not know: {source:?}")
                }
            })
            .collect(),
        env: list(&c["env"])
            .iter()
            .map(|e| (text(&e["name"]), env_value(deployment, e)))
            .collect(),
        ports: list(&c["ports"])
            .iter()
            .map(|p| {
                let number = port_number(p["containerPort"].as_u64());
                let name = p["name"].as_str().map_or(number.to_string(), str::to_owned);
                (name, number)
            })
            .collect(),
        probes,
        mounts: list(&c["volumeMounts"])
            .iter()
            .map(|m| Mount {
                volume: text(&m["name"]),
                path: text(&m["mountPath"]),
                read_only: m["readOnly"].as_bool().unwrap_or(false),
            })
            .collect(),
        read_only_root: c["securityContext"]["readOnlyRootFilesystem"]
            .as_bool()
            .unwrap_or(false),
        pre_stop_sleep_seconds: pre_stop["sleep"]["seconds"].as_u64(),
        memory_limit: c["resources"]["limits"]["memory"]
            .as_str()
            .map(str::to_owned),
    }
}

fn env_value(deployment: &str, e: &Value) -> EnvValue {
    let from = &e["valueFrom"];
    if from.is_null() {
        return EnvValue::Literal(e["value"].as_str().unwrap_or_default().to_owned());
    }
    let key_ref = |r: &Value| (text(&r["name"]), text(&r["key"]));
    if !from["configMapKeyRef"].is_null() {
        let (name, key) = key_ref(&from["configMapKeyRef"]);
        EnvValue::ConfigMapKey { name, key }
    } else if !from["secretKeyRef"].is_null() {
        let (name, key) = key_ref(&from["secretKeyRef"]);
        EnvValue::SecretKey { name, key }
    } else if !from["fieldRef"].is_null() {
        EnvValue::Field(text(&from["fieldRef"]["fieldPath"]))
    } else {
        panic!("{deployment}: a valueFrom the test does not know: {from:?}")
    }
}

fn probe(deployment: &str, p: &Value) -> Probe {
    if !p["grpc"].is_null() {
        Probe::Grpc {
            port: port_number(p["grpc"]["port"].as_u64()),
            service: p["grpc"]["service"].as_str().unwrap_or_default().to_owned(),
        }
    } else if !p["httpGet"].is_null() {
        let get = &p["httpGet"];
        assert!(
            get["scheme"].as_str().is_none_or(|s| s == "HTTP") && get["httpHeaders"].is_null(),
            "{deployment}: an httpGet probe the test does not know: {get:?}"
        );
        Probe::HttpGet {
            port: PortRef::read(&get["port"]),
            path: get["path"].as_str().unwrap_or("/").to_owned(),
        }
    } else if !p["tcpSocket"].is_null() {
        Probe::TcpSocket {
            port: PortRef::read(&p["tcpSocket"]["port"]),
        }
    } else {
        panic!("{deployment}: a probe the test does not know (exec needs a shell): {p:?}")
    }
}

fn volume(deployment: &str, v: &Value) -> Volume {
    if !v["emptyDir"].is_null() {
        Volume::EmptyDir
    } else if !v["secret"].is_null() {
        Volume::Secret(text(&v["secret"]["secretName"]))
    } else if !v["configMap"].is_null() {
        Volume::ConfigMap(text(&v["configMap"]["name"]))
    } else {
        panic!("{deployment}: a volume the test does not know: {v:?}")
    }
}

fn port_number(n: Option<u64>) -> u16 {
    n.and_then(|n| u16::try_from(n).ok())
        .expect("a port number")
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
        .to_owned()
}

fn list(v: &Value) -> &[Value] {
    v.as_sequence().map_or(&[], Vec::as_slice)
}

/// A mapping of strings (labels, selectors, a ConfigMap's data).
fn strings(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => serde_norway::to_string(other).unwrap().trim().to_owned(),
            };
            (text(k), value)
        })
        .collect()
}
