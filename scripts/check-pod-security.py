#!/usr/bin/env python3
"""Checks rendered manifests against the restricted Pod Security Standard.

    scripts/check-pod-security.py FILE ...    # rendered kustomizations
    scripts/check-pod-security.py --self-test # proves each rule can fail

ordermesh's namespaces enforce the `restricted` level, so the API server
refuses a pod that breaks any of its rules, and a Deployment then sits at 0
ready replicas with the reason only in its ReplicaSet's events. This finds it
in the manifests instead:
- every pod template (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
  CronJob, Pod) against every rule of the baseline and restricted levels
  (https://kubernetes.io/docs/concepts/security/pod-security-standards/),
  as of Kubernetes 1.32, the version the namespaces pin;
- every Namespace enforces `restricted`;
- every Gateway Istio deploys pods for says, in its parameters ConfigMap,
  the seccomp profile Istio's templates leave out (they set the rest).

What Istio injects (sidecars) or generates (gateway and waypoint pods) is
not in the manifests: docs/rollout.md gives the command that checks the
running pods on a cluster.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

# Baseline: capabilities that may be added, and sysctls that may be set.
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# Restricted: the only volume types, and the only capability that may be added.
VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                "projected", "secret"}
SECCOMP = {"RuntimeDefault", "Localhost"}
ISTIO_CLASSES = {"istio", "istio-waypoint", "istio-east-west"}
LEVEL = "pod-security.kubernetes.io/enforce"


def pod_of(doc):
    """(pod metadata, pod spec) of a workload, or None."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "Pod":
        return doc.get("metadata") or {}, spec
    if kind == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = spec.get("template") if kind in (
        "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "ReplicationController") else None
    return (template.get("metadata") or {}, template.get("spec") or {}) if template else None


def pod_errors(metadata: dict, pod: dict) -> list[str]:
    errors = []
    context = pod.get("securityContext") or {}
    containers = [(f"{key}.{c.get('name')}", c) for key in ("initContainers", "containers", "ephemeralContainers")
                  for c in pod.get(key) or []]
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            errors.append(f"{field}: true (baseline: host namespaces)")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            errors.append(f"volume {volume.get('name')}: hostPath (baseline)")
        elif not kinds <= VOLUME_TYPES:
            errors.append(f"volume {volume.get('name')}: {sorted(kinds - VOLUME_TYPES)} (restricted: only {sorted(VOLUME_TYPES)})")
    for sysctl in context.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            errors.append(f"sysctl {sysctl.get('name')} (baseline: only the safe set)")
    errors += [f"pod: {e}" for e in context_errors(context, pod_level=True)]
    for key, value in (metadata.get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            errors.append(f"annotation {key}: {value} (baseline: AppArmor runtime/default or localhost/*)")
    pod_seccomp = (context.get("seccompProfile") or {}).get("type")
    for name, container in containers:
        own = container.get("securityContext") or {}
        errors += [f"{name}: {e}" for e in context_errors(own, pod_level=False)]
        if own.get("privileged"):
            errors.append(f"{name}: privileged (baseline)")
        if own.get("procMount", "Default") != "Default":
            errors.append(f"{name}: procMount {own['procMount']} (baseline)")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                errors.append(f"{name}: hostPort {port['hostPort']} (baseline)")
        if own.get("allowPrivilegeEscalation") is not False:
            errors.append(f"{name}: allowPrivilegeEscalation is not false (restricted)")
        if own.get("runAsNonRoot") is False or not (own.get("runAsNonRoot") or context.get("runAsNonRoot")):
            errors.append(f"{name}: runAsNonRoot is not true, for the pod or the container (restricted)")
        seccomp = (own.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in SECCOMP:
            errors.append(f"{name}: seccompProfile {seccomp or 'unset'}, not RuntimeDefault or Localhost (restricted)")
        capabilities = own.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            errors.append(f"{name}: capabilities do not drop ALL (restricted)")
        added = set(capabilities.get("add") or [])
        if added - BASELINE_CAPABILITIES:
            errors.append(f"{name}: adds {sorted(added - BASELINE_CAPABILITIES)} (baseline)")
        elif added - {"NET_BIND_SERVICE"}:
            errors.append(f"{name}: adds {sorted(added - {'NET_BIND_SERVICE'})} (restricted: NET_BIND_SERVICE only)")
    return errors


def context_errors(context: dict, pod_level: bool) -> list[str]:
    """Rules a pod's and a container's securityContext share."""
    errors = []
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        errors.append("windowsOptions.hostProcess (baseline)")
    if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
        errors.append("seccompProfile Unconfined (baseline)")
    if (context.get("appArmorProfile") or {}).get("type") == "Unconfined":
        errors.append("appArmorProfile Unconfined (baseline)")
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        errors.append(f"seLinuxOptions {selinux} (baseline)")
    if context.get("runAsUser") == 0:
        errors.append("runAsUser 0 (restricted)")
    return errors


def gateway_errors(doc, config_maps) -> list[str]:
    """Istio's gateway and waypoint templates set no seccomp profile."""
    if (doc.get("spec") or {}).get("gatewayClassName") not in ISTIO_CLASSES:
        return []
    ref = ((doc.get("spec") or {}).get("infrastructure") or {}).get("parametersRef") or {}
    namespace = (doc.get("metadata") or {}).get("namespace", "default")
    config_map = config_maps.get((namespace, ref.get("name"))) if ref.get("kind") == "ConfigMap" else None
    patch = yaml.safe_load(((config_map or {}).get("data") or {}).get("deployment") or "{}") or {}
    pod = ((patch.get("spec") or {}).get("template") or {}).get("spec") or {}
    if ((pod.get("securityContext") or {}).get("seccompProfile") or {}).get("type") not in SECCOMP:
        return ["the pods Istio deploys for it have no seccomp profile: its parameters ConfigMap "
                "(spec.infrastructure.parametersRef) must set spec.template.spec.securityContext.seccompProfile"]
    return []


def check(docs) -> tuple[list[str], int]:
    errors, pods = [], 0
    config_maps = {((d.get("metadata") or {}).get("namespace", "default"), (d.get("metadata") or {}).get("name")): d
                   for d in docs if d.get("kind") == "ConfigMap"}
    for doc in docs:
        name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        if (found := pod_of(doc)) is not None:
            pods += 1
            errors += [f"{name}: {e}" for e in pod_errors(*found)]
        elif doc.get("kind") == "Namespace":
            level = ((doc.get("metadata") or {}).get("labels") or {}).get(LEVEL)
            if level != "restricted":
                errors.append(f"{name}: {LEVEL} is {level!r}, not 'restricted'")
        elif doc.get("kind") == "Gateway" and str(doc.get("apiVersion", "")).startswith("gateway.networking.k8s.io/"):
            errors += [f"{name}: {e}" for e in gateway_errors(doc, config_maps)]
    return errors, pods


# --- Self-test -----------------------------------------------------------------

GOOD = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t", "labels": {LEVEL: "restricted"}}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"}, "spec": {"template": {
        "metadata": {"annotations": {"container.apparmor.security.beta.kubernetes.io/app": "runtime/default"}},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"},
                                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
            "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "token", "projected": {"sources": []}}],
            "initContainers": [{"name": "init", "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
            "containers": [{"name": "app", "ports": [{"containerPort": 8080}], "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                "seLinuxOptions": {"type": "container_t"}}}],
        }}}},
    {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "gw", "namespace": "t"},
     "spec": {"gatewayClassName": "istio", "infrastructure": {"parametersRef": {"kind": "ConfigMap", "name": "gw"}}}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gw", "namespace": "t"}, "data": {
        "deployment": "spec:\n  template:\n    spec:\n      securityContext:\n        seccompProfile:\n          type: RuntimeDefault\n"}},
]
POD = (1, "spec", "template", "spec")
APP = (*POD, "containers", 0, "securityContext")


def put(value, *path):
    def change(docs):
        node = docs
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


BROKEN = {
    "host network": (put(True, *POD, "hostNetwork"), "hostNetwork"),
    "host PID": (put(True, *POD, "hostPID"), "hostPID"),
    "hostPath volume": (put([{"name": "h", "hostPath": {"path": "/"}}], *POD, "volumes"), "hostPath"),
    "volume type restricted refuses": (put([{"name": "n", "nfs": {"server": "x", "path": "/"}}], *POD, "volumes"), "nfs"),
    "unsafe sysctl": (put([{"name": "kernel.msgmax", "value": "1"}], *POD, "securityContext", "sysctls"), "kernel.msgmax"),
    "privileged": (put(True, *APP, "privileged"), "privileged"),
    "hostPort": (put([{"containerPort": 80, "hostPort": 80}], *POD, "containers", 0, "ports"), "hostPort"),
    "unmasked /proc": (put("Unmasked", *APP, "procMount"), "procMount"),
    "AppArmor unconfined": (put({"type": "Unconfined"}, *APP, "appArmorProfile"), "appArmorProfile"),
    "AppArmor annotation unconfined": (put({"container.apparmor.security.beta.kubernetes.io/app": "unconfined"},
                                           1, "spec", "template", "metadata", "annotations"), "AppArmor"),
    "SELinux type": (put({"type": "spc_t"}, *APP, "seLinuxOptions"), "seLinuxOptions"),
    "host process": (put({"hostProcess": True}, *APP, "windowsOptions"), "hostProcess"),
    "privilege escalation allowed": (put(True, *APP, "allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
    "privilege escalation unset (init container)": (
        put({"capabilities": {"drop": ["ALL"]}}, *POD, "initContainers", 0, "securityContext"), "initContainers.init"),
    "root allowed": (put(False, *APP, "runAsNonRoot"), "runAsNonRoot"),
    "runAsNonRoot unset": (put({"seccompProfile": {"type": "RuntimeDefault"}}, *POD, "securityContext"), "runAsNonRoot"),
    "runs as UID 0": (put(0, *APP, "runAsUser"), "runAsUser 0"),
    "no seccomp profile": (put({"runAsNonRoot": True}, *POD, "securityContext"), "seccompProfile unset"),
    "seccomp unconfined": (put({"type": "Unconfined"}, *APP, "seccompProfile"), "Unconfined"),
    "capabilities not all dropped": (put({"drop": ["NET_RAW"]}, *APP, "capabilities"), "drop ALL"),
    "NET_ADMIN added (istio-init without CNI)": (put({"drop": ["ALL"], "add": ["NET_ADMIN"]}, *APP, "capabilities"),
                                                  "NET_ADMIN"),
    "namespace not restricted": (put({LEVEL: "baseline"}, 0, "metadata", "labels"), "not 'restricted'"),
    "Istio gateway without a seccomp profile": (put({"deployment": "spec: {}"}, 3, "data"), "no seccomp profile"),
}


def self_test() -> int:
    failures = []
    errors, _ = check(GOOD)
    if errors:
        failures.append(f"valid objects were refused: {errors}")
    for name, (change, expected) in BROKEN.items():
        docs = copy.deepcopy(GOOD)
        change(docs)
        errors, _ = check(docs)
        hits = [e for e in errors if expected in e]
        if not hits:
            failures.append(f"{name}: not refused as expected (errors: {errors or 'none'})")
        else:
            print(f"check-pod-security self-test: refused {name}: {hits[0]}")
    for failure in failures:
        print(f"check-pod-security self-test: FAIL {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"check-pod-security self-test: ok ({len(BROKEN)} broken inputs refused, valid ones accepted)")
    return 0


def main() -> int:
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    if not sys.argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    docs = [d for path in sys.argv[1:] for d in yaml.safe_load_all(Path(path).read_text()) if isinstance(d, dict)]
    errors, pods = check(docs)
    for error in errors:
        print(f"check-pod-security: {error}", file=sys.stderr)
    namespaces = sum(d.get("kind") == "Namespace" for d in docs)
    print(f"check-pod-security: {pods} pod templates, {namespaces} namespaces against the restricted level: "
          f"{'FAIL' if errors else 'ok'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
