//! The pods' environment: what the kubelet gives each container, and
//! whether the binary reads it.

use std::collections::{BTreeMap, BTreeSet};

use super::flags;
use super::image::Image;
use super::rendered::{Deployment, EnvFrom, EnvValue, Rendered};
use super::world::{NAMESPACE, pod_name};
use crate::harness::ORDERMESH;

/// Each pod's env (value and source by name) and argv, by Deployment.
pub type Envs = BTreeMap<String, (BTreeMap<String, (String, Source)>, Vec<String>)>;

/// Where an env var of a pod came from: shared by every pod that uses the
/// source (image, ConfigMap, Secret), or set on this container alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Shared(String),
    Container,
}

/// Each pod's environment, built as the kubelet builds it, checked against
/// the names its role's `--help` declares. A name set on one container
/// must be its role's; one from a shared source (the image, a ConfigMap, a
/// Secret) must be read by at least one role that gets it, since one
/// ConfigMap configures every role and each reads only its own flags.
pub fn check(
    overlay: &str,
    image: &Image,
    ours: &[&Deployment],
    files: &BTreeMap<String, BTreeMap<String, String>>,
) -> Envs {
    let mut envs = BTreeMap::new();
    let mut unread: BTreeMap<String, (Source, BTreeSet<String>)> = BTreeMap::new();
    let mut read_somewhere = BTreeSet::new();
    for deployment in ours {
        let pod = pod_name(&deployment.name);
        let env = pod_env(image, deployment, files, &pod);
        let argv = super::world::argv(image, deployment);
        let declared = flags::env_names(ORDERMESH, &argv[1..]);
        let not_read: Vec<&String> = env.keys().filter(|n| !declared.contains(*n)).collect();
        println!(
            "{overlay}: {pod}: `{}`, {} env vars, {} read by its role; not by it (other roles'): {not_read:?}",
            argv.join(" "),
            env.len(),
            env.len() - not_read.len()
        );
        for (name, (_, source)) in &env {
            if declared.contains(name) {
                read_somewhere.insert(name.clone());
            } else {
                unread
                    .entry(name.clone())
                    .or_insert_with(|| (source.clone(), BTreeSet::new()))
                    .1
                    .insert(deployment.name.clone());
            }
        }
        envs.insert(deployment.name.clone(), (env, argv));
    }
    let mut problems = Vec::new();
    for (name, (source, pods)) in &unread {
        match source {
            Source::Container => problems.push(format!(
                "{name} is set on the container of {pods:?}, whose role does not read it"
            )),
            Source::Shared(from) if !read_somewhere.contains(name) => problems.push(format!(
                "{name} (from {from}) is read by no role that gets it ({pods:?})"
            )),
            Source::Shared(_) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "{overlay}: env nothing reads:\n{}",
        problems.join("\n")
    );
    envs
}

/// The ConfigMap every role uses (the base's generator), by key.
pub fn shared_config(rendered: &Rendered) -> BTreeMap<String, String> {
    rendered
        .config_maps
        .iter()
        .find(|(name, _)| name.starts_with("ordermesh-config"))
        .map(|(_, data)| data.clone())
        .expect("the rendered ordermesh-config ConfigMap")
}

pub fn secrets_used(deployments: &[&Deployment]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for d in deployments {
        for from in &d.container.env_from {
            if let EnvFrom::Secret(name) = from {
                names.insert(name.clone());
            }
        }
        for (_, value) in &d.container.env {
            if let EnvValue::SecretKey { name, .. } = value {
                names.insert(name.clone());
            }
        }
    }
    names
}

/// The container's environment as the kubelet builds it: the image's ENV,
/// then envFrom in order, then env (each later one wins).
fn pod_env(
    image: &Image,
    deployment: &Deployment,
    files: &BTreeMap<String, BTreeMap<String, String>>,
    pod: &str,
) -> BTreeMap<String, (String, Source)> {
    let source = |name: &str| {
        files
            .get(name)
            .unwrap_or_else(|| panic!("{}: no ConfigMap or Secret {name}", deployment.name))
    };
    let mut env: BTreeMap<String, (String, Source)> = image
        .env
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v.clone(), Source::Shared("the image".to_owned())),
            )
        })
        .collect();
    for from in &deployment.container.env_from {
        let (EnvFrom::ConfigMap(name) | EnvFrom::Secret(name)) = from;
        for (key, value) in source(name) {
            env.insert(key.clone(), (value.clone(), Source::Shared(name.clone())));
        }
    }
    for (key, value) in &deployment.container.env {
        let value = match value {
            EnvValue::Literal(v) => v.clone(),
            EnvValue::ConfigMapKey { name, key: k } | EnvValue::SecretKey { name, key: k } => {
                source(name)
                    .get(k)
                    .unwrap_or_else(|| panic!("{}: {name} has no key {k}", deployment.name))
                    .clone()
            }
            EnvValue::Field(path) => match path.as_str() {
                "metadata.name" => pod.to_owned(),
                "metadata.namespace" => NAMESPACE.to_owned(),
                other => panic!("{}: fieldRef {other} is not simulated", deployment.name),
            },
        };
        env.insert(key.clone(), (value, Source::Container));
    }
    env
}
