//! One overlay, run: its pods on a private network with what they expect
//! around them, their env checked, probed, an order placed, stopped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ordermesh_testkit::hosts::{Host, Network};
use ordermesh_testkit::postgres::{PrivatePostgres, ServerTls};
use sqlx::Connection;

use ordermesh_testkit::tls::TestCa;

use super::backing;
use super::checks;
use super::env;
use super::image::Image;
use super::kubelet::{self, Pod, PodPlan};
use super::rendered::{self, Deployment, Rendered};
use crate::harness::{ORDERMESH, workspace_root};

/// The image the overlays deploy; other Deployments (Flagger's load
/// tester) run someone else's image and are not run here.
const OUR_IMAGE: &str = "ghcr.io/ordermesh/ordermesh";
/// The database URL as docs/rollout.md section 3 tells operators to put it
/// in the Secret: over TLS, the server's certificate checked against the
/// image's CA bundle and its host name. The test's PostgreSQL answers to
/// that name with a certificate of the test's CA, which the sandboxes'
/// bundle trusts.
const DATABASE_HOST: &str = "postgres.example.internal";
const DATABASE_URL: &str = "postgres://postgres@postgres.example.internal:5432/ordermesh?sslmode=verify-full&sslrootcert=/etc/ssl/certs/ca-certificates.crt";
pub const NAMESPACE: &str = "ordermesh";
/// Bounds every wait of a pod that is not its own probe's budget.
pub const READY_LIMIT: Duration = Duration::from_secs(60);

pub async fn run_overlay(overlay: &str) {
    let Some(network) = Network::new() else {
        return;
    };
    if let Some(missing) = kubelet::sandbox_unavailable() {
        ordermesh_testkit::missing::<()>(&missing);
        return;
    }
    for tool in ["kubectl", "openssl", "curl"] {
        if ordermesh_testkit::tool(tool).is_none() {
            return;
        }
    }
    let root = workspace_root();
    let rendered = rendered::render(&root, overlay);
    let image = Image::from_dockerfile(&root.join("Dockerfile"));
    let ours: Vec<&Deployment> = rendered
        .deployments
        .iter()
        .filter(|d| {
            let ours = d.container.image.starts_with(OUR_IMAGE);
            if !ours {
                println!(
                    "{overlay}: not run: Deployment {} ({})",
                    d.name, d.container.image
                );
            }
            ours
        })
        .collect();
    assert!(
        ours.len() >= 4,
        "{overlay}: {} of our Deployments",
        ours.len()
    );

    // The cluster around the pods: hosts first, so every address is known
    // before any hosts file is written.
    let pod_hosts: BTreeMap<String, Host> = ours
        .iter()
        .map(|d| (d.name.clone(), network.host(&d.name)))
        .collect();
    let config = env::shared_config(&rendered);
    let needs_database = env::secrets_used(&ours).contains("ordermesh-database");
    let nats_url = config.get("ORDERMESH_NATS_URL").cloned();
    let idp_host = network.host("idp");
    let ca = TestCa::new("ordermesh manifests test CA");
    let jwks_url = config
        .get("ORDERMESH_JWKS_URL")
        .expect("config.env names the issuer's JWKS")
        .clone();
    let (idp_name, _idp) = backing::serve_jwks(&idp_host, &ca, &jwks_url).await;
    let mut extra_names = vec![(idp_host.addr(), idp_name)];

    let postgres = if needs_database {
        let host = network.host("pg");
        let (cert, key) = ca.server_cert(DATABASE_HOST, &format!("DNS:{DATABASE_HOST}"));
        let tls = ServerTls {
            cert_chain: std::fs::read(cert).unwrap(),
            key: std::fs::read(key).unwrap(),
        };
        let started =
            tokio::task::block_in_place(|| PrivatePostgres::start_in_with_tls(&host, &tls));
        let Some(postgres) = started else {
            return;
        };
        let admin_url = format!("{}?sslmode=require", postgres.url());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query("CREATE DATABASE ordermesh")
            .execute(&mut admin)
            .await
            .unwrap();
        extra_names.push((host.addr(), DATABASE_HOST.to_owned()));
        Some(postgres)
    } else {
        None
    };
    let nats = match &nats_url {
        Some(_) if !has_nats_server() => {
            ordermesh_testkit::missing::<()>("nats-server (Debian package nats-server)");
            return;
        }
        Some(url) => {
            let name = url_host(url);
            let hosts: Vec<Host> = (0..3).map(|i| network.host(&format!("nats-{i}"))).collect();
            // A Service in front of the cluster: the first node's address
            // (the client learns the others from it).
            extra_names.push((hosts[0].addr(), name));
            let address = hosts[0].socket(4222);
            Some((address, backing::nats_cluster(&hosts).await))
        }
        None => None,
    };
    let mut files = rendered.config_maps.clone();
    files.extend(backing::secrets(postgres.as_ref().map(|_| DATABASE_URL)));

    // The pods' env, checked against what each role reads, then started.
    let envs = env::check(overlay, &image, &ours, &files);

    let hosts_file = hosts_file(overlay, &rendered, &ours, &pod_hosts, &extra_names);
    let bundle = backing::bundle(&ca);
    let mut pods = Vec::new();
    for deployment in &ours {
        let (env, argv) = &envs[&deployment.name];
        let plan = plan(
            deployment,
            &image,
            &pod_hosts[&deployment.name],
            argv.clone(),
            env.iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect(),
            &files,
            &hosts_file,
            &bundle,
        );
        pods.push(Pod::start(plan).await);
    }

    // Probes as declared: startup until it passes, then readiness and
    // liveness; then every declared port answers.
    let mut probed = 0;
    for index in 0..pods.len() {
        let c = &ours[index].container;
        let startup = c.probes.iter().filter(|(kind, ..)| *kind == "startup");
        let rest = c.probes.iter().filter(|(kind, ..)| *kind != "startup");
        for (kind, probe, timeout) in startup.chain(rest) {
            let budget = probe_budget(kind);
            let timeout = Duration::from_secs(*timeout);
            match pods[index]
                .probe_until_success(kind, probe, timeout, &c.ports, budget)
                .await
            {
                Ok(tries) => println!(
                    "{overlay}: {} {kind} {probe:?}: passed (try {tries})",
                    pods[index].name
                ),
                // A pod that failed for want of another: name the one that
                // exited, if any, first.
                Err(e) => {
                    let exited: Vec<String> = pods
                        .iter_mut()
                        .filter_map(|p| p.check_running().err())
                        .collect();
                    panic!("{overlay}: {}\n{e}", exited.join("\n"));
                }
            }
            probed += 1;
        }
        let pod = &pods[index];
        let deployment = ours[index];
        pod.assert_identity(
            deployment.run_as_user.unwrap_or(image.user),
            deployment.run_as_group.unwrap_or(image.group),
        );
        for (name, port) in &c.ports {
            let target = SocketAddr::new(pod.host.addr().into(), *port);
            kubelet::tcp_connect(target, Duration::from_secs(2))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{overlay}: {}: containerPort {name} ({port}) has no listener: {e}\n{}",
                        pod.name,
                        pod.logs()
                    )
                });
        }
    }

    for (pod, deployment) in pods.iter().zip(&ours) {
        checks::scrape(overlay, pod, deployment).await;
    }

    let order = checks::through_the_gateway(overlay, &rendered, &pod_hosts, &envs).await;
    if let Some(postgres) = &postgres {
        // pg_hba takes TLS only; the Secret's URL also checks the server.
        let admin_url = format!("{}?sslmode=require", postgres.url());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        let (tls, plain): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'ordermesh'",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert!(
            tls > 0 && plain == 0,
            "{overlay}: {tls} TLS and {plain} plain connections"
        );
        println!("{overlay}: PostgreSQL: {tls} connections of the pods, all TLS (verify-full)");
    }
    if let Some((address, _)) = &nats {
        let replicas = config
            .get("ORDERMESH_NATS_STREAM_REPLICAS")
            .map_or(1, |r| r.parse().expect("a number of replicas"));
        checks::check_events(*address, replicas, overlay).await;
    }

    // Memory against the limits, for the record: this is the debug build,
    // and nothing here enforces a limit (no cgroup of the pod's own).
    for (pod, deployment) in pods.iter().zip(&ours) {
        println!(
            "{overlay}: {}: peak RSS {} MiB (debug build), limit {}",
            pod.name,
            pod.peak_rss_kib() / 1024,
            deployment
                .container
                .memory_limit
                .as_deref()
                .unwrap_or("none")
        );
    }

    // Stopped as the kubelet stops a pod: preStop, SIGTERM, grace period.
    let stops = pods
        .iter_mut()
        .zip(&ours)
        .map(|(pod, deployment)| async move {
            // The grace period counts from the deletion, preStop included.
            let grace = Duration::from_secs(deployment.termination_grace_seconds);
            let deadline = tokio::time::Instant::now() + grace;
            if let Some(seconds) = deployment.container.pre_stop_sleep_seconds {
                tokio::time::sleep(Duration::from_secs(seconds)).await;
            }
            pod.terminate();
            let drained =
                tokio::time::timeout_at(deadline, draining(overlay, pod, deployment)).await;
            assert!(
                drained.is_ok(),
                "{overlay}: pod {} outlived its grace period",
                pod.name
            );
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let status = pod.wait_exit(left).await;
            assert!(
                status.success(),
                "{overlay}: pod {} stopped with {status}:\n{}",
                pod.name,
                pod.logs()
            );
        });
    futures::future::join_all(stops).await;
    println!(
        "{overlay}: {} pods ran; {probed} probes passed; order {order} confirmed through the gateway; all stopped cleanly",
        pods.len()
    );
    drop(nats);
    drop(postgres);
}

/// What the Deployments' comments and config.env's ORDERMESH_SHUTDOWN_DELAY
/// promise of a gRPC role: after SIGTERM its readiness probe fails while
/// the container still runs, so endpoints stop sending to it before it
/// drains. Its liveness probe ("", the whole server) is reported, not
/// asserted: it turns NOT_SERVING at the same moment, and the kubelet runs
/// no liveness probe on a terminating pod.
async fn draining(overlay: &str, pod: &mut Pod, deployment: &Deployment) {
    let c = &deployment.container;
    let probe = |want: &str| {
        c.probes
            .iter()
            .find(|(kind, ..)| *kind == want)
            .map(|(_, probe, timeout)| (probe, Duration::from_secs(*timeout)))
    };
    let (Some(readiness), Some(liveness)) = (probe("readiness"), probe("liveness")) else {
        return;
    };
    let rendered::Probe::Grpc { service, .. } = readiness.0 else {
        return;
    };
    match pod.draining(readiness, liveness, &c.ports).await {
        Some(alive) => println!(
            "{overlay}: {} after SIGTERM: readiness ({service}) failing while it runs; liveness {}",
            pod.name,
            alive.map_or_else(|e| format!("failing too ({e})"), |()| "passing".to_owned())
        ),
        None => panic!(
            "{overlay}: {} exited after SIGTERM without turning unready first",
            pod.name
        ),
    }
}

/// Each probe's number of tries: its kind's patience, the period
/// shortened to the test's poll (250 ms).
fn probe_budget(kind: &str) -> u64 {
    let seconds = match kind {
        "startup" => READY_LIMIT.as_secs(),
        // Ready once its peers are: the gateway waits for the order service.
        "readiness" => 30,
        _ => 10,
    };
    seconds * 4
}

pub fn pod_name(deployment: &str) -> String {
    // A ReplicaSet's hash and a pod suffix, as Kubernetes names pods.
    format!("{deployment}-7f9c5d4b8-x2k4p")
}

/// command + args, or the image's ENTRYPOINT and CMD where the pod has none.
pub fn argv(image: &Image, deployment: &Deployment) -> Vec<String> {
    let c = &deployment.container;
    let command = c
        .command
        .clone()
        .unwrap_or_else(|| image.entrypoint.clone());
    let args = match (&c.command, &c.args) {
        (_, Some(args)) => args.clone(),
        (None, None) => image.cmd.clone(),
        (Some(_), None) => Vec::new(),
    };
    assert_eq!(
        command.first(),
        Some(&image.binary),
        "{}: the command is not the image's ordermesh binary",
        deployment.name
    );
    command.into_iter().chain(args).collect()
}

#[allow(clippy::too_many_arguments)]
fn plan(
    deployment: &Deployment,
    image: &Image,
    host: &Host,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    files: &BTreeMap<String, BTreeMap<String, String>>,
    hosts_file: &str,
    bundle: &std::path::Path,
) -> PodPlan {
    let uid = deployment.run_as_user.unwrap_or(image.user);
    assert!(
        !deployment.run_as_non_root || uid != 0,
        "{}: runAsNonRoot with uid 0",
        deployment.name
    );
    let c = &deployment.container;
    let mounts = c
        .mounts
        .iter()
        .map(|m| {
            let volume = match deployment.volumes.get(&m.volume) {
                Some(rendered::Volume::EmptyDir) => rendered::Volume::EmptyDir,
                Some(rendered::Volume::Secret(n)) => rendered::Volume::Secret(n.clone()),
                Some(rendered::Volume::ConfigMap(n)) => rendered::Volume::ConfigMap(n.clone()),
                None => panic!(
                    "{}: volumeMount {} names no volume",
                    deployment.name, m.volume
                ),
            };
            (volume, m.path.clone(), m.read_only)
        })
        .collect();
    PodPlan {
        name: pod_name(&deployment.name),
        host: host.clone(),
        binary: (PathBuf::from(ORDERMESH), image.binary.clone()),
        argv,
        env,
        uid,
        gid: deployment.run_as_group.unwrap_or(image.group),
        fs_group: deployment.fs_group,
        workdir: image.workdir.clone(),
        read_only_root: c.read_only_root,
        mounts,
        files: files.clone(),
        hosts_file: hosts_file.to_owned(),
        ca_bundle: bundle.to_owned(),
    }
}

/// The labels a pod runs with: Flagger's primary renames `app` for the
/// Deployments its Canaries target.
fn running_labels(rendered: &Rendered, d: &Deployment) -> BTreeMap<String, String> {
    let mut labels = d.pod_labels.clone();
    if rendered.canary_targets.contains(&d.name) {
        labels.insert("app".to_owned(), format!("{}-primary", d.name));
    }
    labels
}

/// /etc/hosts of every pod: each Service's names (short and qualified) at
/// the address of the pod it selects, and the names of the cluster's
/// outside parts. A Service must select a pod and target ports the pod
/// declares; since a name maps straight to the pod, its port must equal the
/// target's number (no kube-proxy here to translate).
fn hosts_file(
    overlay: &str,
    rendered: &Rendered,
    ours: &[&Deployment],
    pod_hosts: &BTreeMap<String, Host>,
    extra: &[(std::net::Ipv4Addr, String)],
) -> String {
    let mut lines = vec!["127.0.0.1\tlocalhost".to_owned()];
    for service in &rendered.services {
        let selects = |labels: &BTreeMap<String, String>| {
            !service.selector.is_empty()
                && service
                    .selector
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v))
        };
        let selected: Vec<&&Deployment> = ours
            .iter()
            .filter(|d| selects(&running_labels(rendered, d)))
            .collect();
        if selected.is_empty() {
            let others = rendered.deployments.iter().any(|d| selects(&d.pod_labels));
            assert!(others, "{overlay}: Service {} selects no pod", service.name);
            println!(
                "{overlay}: Service {} selects only pods not run here",
                service.name
            );
            continue;
        }
        assert_eq!(
            selected.len(),
            1,
            "{overlay}: Service {} selects several Deployments",
            service.name
        );
        let d = selected[0];
        for (port, target) in &service.ports {
            let resolved = target.resolve(&d.container.ports).unwrap_or_else(|| {
                panic!(
                    "{overlay}: Service {} targets {target:?}, which {} does not declare",
                    service.name, d.name
                )
            });
            assert_eq!(
                *port, resolved,
                "{overlay}: Service {} port {port} targets {resolved}: the test maps names straight to pods",
                service.name
            );
        }
        let name = &service.name;
        lines.push(format!(
            "{}\t{name} {name}.{NAMESPACE} {name}.{NAMESPACE}.svc {name}.{NAMESPACE}.svc.cluster.local",
            pod_hosts[&d.name].addr()
        ));
    }
    for (addr, name) in extra {
        lines.push(format!("{addr}\t{name}"));
    }
    lines.join("\n") + "\n"
}

fn has_nats_server() -> bool {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .iter()
        .any(|path| std::path::Path::new(path).is_file())
}

fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.split(':').next().unwrap_or(authority).to_owned()
}

pub async fn eventually_connects(target: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while kubelet::tcp_connect(target, Duration::from_secs(1))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{target} never listened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
