#!/usr/bin/env python3
"""What the NetworkPolicies of a rendered overlay let each pod send.

    scripts/check-netpol.py RENDERED.yaml     (k8s overlays; make lint)
    scripts/check-netpol.py --self-test PROD.yaml AMBIENT.yaml   (the rendered overlays)

kubernetes-validate checks their schema; a wrong label or port in a policy
would still cut a call only in the cluster. This evaluates the policies as
a CNI does (a pod selected by an Egress policy may send only what one of
them allows; peers by podSelector in the namespace, namespaceSelector by
`kubernetes.io/metadata.name`, ipBlock with its exceptions) and checks:

- every pod is under a default deny of egress;
- each role reaches what it needs: DNS and istiod (15012); its peers as
  ordermesh-config names them (ORDERMESH_*_URL: the Service's pods on its
  container port) or, in an ambient namespace, the waypoint's 15008;
  PostgreSQL (5432) where DATABASE_URL is set; the JWKS host (443) for the
  roles that check tokens; the collector when OTEL_EXPORTER_OTLP_ENDPOINT
  is set;
- and nothing else chosen to be out of bounds: a role calling one it has
  no business with, a service calling the internet, the metadata endpoint.
"""

from __future__ import annotations

import copy
import ipaddress
import sys
from urllib.parse import urlparse

import yaml

NS = "ordermesh"
DNS = ("kube-system", {"k8s-app": "kube-dns"}, 53, "UDP")
ISTIOD = ("istio-system", {"app": "istiod"}, 15012, "TCP")
# Peers each role's flags name (ordermesh-config), by variable.
PEER_VARS = {"gateway": ["ORDERMESH_GATEWAY_ORDER_URL", "ORDERMESH_GATEWAY_INVENTORY_URL"],
             "order": ["ORDERMESH_INVENTORY_URL", "ORDERMESH_PAYMENT_URL"]}
# The roles that verify tokens (inventory: its stock events' watch).
TOKEN_CHECKERS = {"gateway", "order", "inventory"}
PUBLIC = "203.0.113.10"  # stands for the issuer's public address
METADATA = "169.254.169.254"


def selects(selector, labels) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, op, values = expression["key"], expression["operator"], expression.get("values") or []
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def peer_matches(peer, dest) -> bool:
    """dest: ("pod", namespace, labels) or ("ip", address)."""
    if "ipBlock" in peer:
        if dest[0] != "ip":
            return False
        address = ipaddress.ip_address(dest[1])
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except") or [])
    if dest[0] != "pod":
        return False
    _, namespace, labels = dest
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
            return False
    elif namespace != NS:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], labels)


def allowed(policies, labels, dest, port, protocol="TCP") -> bool:
    egress = [p for p in policies if "Egress" in (p["spec"].get("policyTypes") or [])
              and selects(p["spec"].get("podSelector") or {}, labels)]
    if not egress:
        return True
    for policy in egress:
        for rule in policy["spec"].get("egress") or []:
            peers_ok = not rule.get("to") or any(peer_matches(peer, dest) for peer in rule["to"])
            ports = rule.get("ports") or []
            ports_ok = not ports or any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports)
            if peers_ok and ports_ok:
                return True
    return False


def errors_of(docs) -> list[str]:
    by_kind = lambda kind: [d for d in docs if d.get("kind") == kind]
    policies = by_kind("NetworkPolicy")
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    config = next((d.get("data") or {} for d in by_kind("ConfigMap") if d["metadata"]["name"].startswith("ordermesh-config")), {})
    namespace = next((d for d in by_kind("Namespace") if d["metadata"]["name"] == NS), {})
    ambient = (namespace.get("metadata", {}).get("labels") or {}).get("istio.io/dataplane-mode") == "ambient"
    waypoint = ("pod", NS, {"gateway.networking.k8s.io/gateway-name": "waypoint"})

    def labels(name):
        return deployments[name]["spec"]["template"]["metadata"]["labels"]

    def container_port(name, port):
        for container in deployments[name]["spec"]["template"]["spec"]["containers"]:
            for p in container.get("ports") or []:
                if p.get("containerPort") == port:
                    return port
        return None

    errors = []
    if not any(not (p["spec"].get("podSelector") or {}) and "Egress" in (p["spec"].get("policyTypes") or [])
               and not p["spec"].get("egress") for p in policies):
        errors.append("no default deny of egress (a policy selecting every pod, Egress, no rule)")
    everyone = [labels(n) for n in deployments] + [waypoint[2]]
    for pod in everyone:
        if allowed(policies, pod, ("ip", "198.51.100.7"), 12345):
            errors.append(f"{pod.get('app.kubernetes.io/name') or pod}: no default deny of egress")

    def need(source, dest, port, what, protocol="TCP"):
        if not allowed(policies, labels(source), dest, port, protocol):
            errors.append(f"{source}: cannot reach {what} ({protocol} {port})")

    def refuse(source, dest, port, what):
        if allowed(policies, labels(source), dest, port):
            errors.append(f"{source}: may reach {what} (port {port}), which it has no business with")

    roles = {n: (d["spec"]["template"]["spec"]["containers"][0].get("args") or [""])[0] for n, d in deployments.items()}
    for name, role in roles.items():
        if role not in ("gateway", "order", "inventory", "payment"):
            continue
        need(name, ("pod",) + DNS[:2], DNS[2], "DNS", DNS[3])
        if not ambient:
            need(name, ("pod",) + ISTIOD[:2], ISTIOD[2], "istiod")
        for variable in PEER_VARS.get(role, []):
            url = urlparse(config.get(variable, ""))
            if not url.hostname:
                continue
            if ambient:
                need(name, waypoint, 15008, f"the waypoint for {url.hostname}")
            elif url.hostname in deployments:
                port = container_port(url.hostname, url.port)
                if port is None:
                    errors.append(f"{variable}: {url.hostname} has no container port {url.port}")
                else:
                    need(name, ("pod", NS, labels(url.hostname)), port, f"{url.hostname}")
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        if any(e.get("name") == "DATABASE_URL" for e in container.get("env") or []):
            need(name, ("ip", "10.20.30.40"), 5432, "PostgreSQL")
        if role in TOKEN_CHECKERS and config.get("ORDERMESH_JWKS_URL", "").startswith("https://"):
            need(name, ("ip", PUBLIC), 443, "the JWKS host")
        elif role not in TOKEN_CHECKERS:
            refuse(name, ("ip", PUBLIC), 443, "the internet")
        otlp = urlparse(config.get("OTEL_EXPORTER_OTLP_ENDPOINT", ""))
        if otlp.hostname:
            need(name, ("pod", otlp.hostname.split(".")[1], {}), otlp.port, "the OTLP collector")
        refuse(name, ("ip", METADATA), 80, "the cloud metadata endpoint")
        # The call graph's other direction, and roles with no peers.
        for other, other_role in roles.items():
            if other_role == "gateway" and not ambient:
                refuse(name, ("pod", NS, labels(other)), 8080, "the gateway")
        if role in ("inventory", "payment") and not ambient:
            for other, other_role in roles.items():
                if other_role in ("order", "inventory", "payment") and other != name:
                    port = {"order": 50051, "inventory": 50052, "payment": 50053}[other_role]
                    refuse(name, ("pod", NS, labels(other)), port, other)
    return errors


def self_test(path: str, ambient_path: str) -> int:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    ambient = [d for d in yaml.safe_load_all(open(ambient_path)) if d]
    failures = []
    for rendered in (docs, ambient):
        if errors := errors_of(rendered):
            failures.append(f"a shipped overlay is refused: {errors}")

    def policy(d, name):
        return next(p for p in d if p.get("kind") == "NetworkPolicy" and p["metadata"]["name"] == name)

    def without(name):
        return lambda d: d.remove(policy(d, name))

    def edit(name, change):
        return lambda d: change(policy(d, name)["spec"])

    cases = {
        "no default deny": (without("default-deny-egress"), "no default deny"),
        "no DNS": (edit("egress-dns-and-istiod", lambda s: s["egress"].pop(0)), "cannot reach DNS"),
        "DNS over TCP only": (edit("egress-dns-and-istiod", lambda s: s["egress"][0]["ports"].pop(0)),
                              "cannot reach DNS (UDP 53)"),
        "a peer's label misspelt": (edit("order-egress-peers", lambda s: s["egress"][1]["to"][0]["podSelector"]
                                         ["matchLabels"].update({"app.kubernetes.io/name": "paymnet"})),
                                    "order: cannot reach payment"),
        "a peer's port wrong": (edit("gateway-egress-peers", lambda s: s["egress"][0]["ports"][0].update(port=50052)),
                                "gateway: cannot reach order"),
        "PostgreSQL closed": (without("egress-postgres"), "cannot reach PostgreSQL"),
        "the JWKS host closed": (without("egress-jwks"), "cannot reach the JWKS host"),
        "the internet open to payment": (edit("egress-jwks", lambda s: s["podSelector"]["matchExpressions"][0]
                                              ["values"].append("payment")), "payment: may reach the internet"),
        "the metadata endpoint open": (edit("egress-postgres", lambda s: s["egress"][0].pop("ports")),
                                       "may reach the cloud metadata endpoint"),
        "inventory may call payment": (edit("order-egress-peers", lambda s: s["podSelector"].update(
            matchLabels={}, matchExpressions=[{"key": "app.kubernetes.io/name", "operator": "In",
                                               "values": ["order", "inventory"]}])), "inventory: may reach payment"),
        "the collector closed": (without("egress-otlp"), "cannot reach the OTLP collector"),
    }
    ambient_cases = {
        "ambient: no tunnel to the waypoint": (without("apps-egress-hbone"), "order: cannot reach the waypoint"),
        "ambient: the waypoint's port wrong": (edit("apps-egress-hbone", lambda s: s["egress"][0]["ports"][0].update(
            port=15001)), "gateway: cannot reach the waypoint"),
    }
    for name, (change, expected) in list(cases.items()) + list(ambient_cases.items()):
        broken = copy.deepcopy(ambient if name.startswith("ambient:") else docs)
        change(broken)
        errors = errors_of(broken)
        if not any(expected in e for e in errors):
            failures.append(f"{name}: not refused ({errors or 'no errors'})")
        else:
            print(f"check-netpol self-test: refused {name}: {next(e for e in errors if expected in e)}")
    for failure in failures:
        print(f"check-netpol self-test: FAIL {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"check-netpol self-test: ok ({len(cases) + len(ambient_cases)} broken policies refused, "
          "the shipped ones accepted)")
    return 0


def main(argv) -> int:
    if argv[:1] == ["--self-test"]:
        return self_test(argv[1], argv[2])
    status = 0
    for path in argv:
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        errors = errors_of(docs)
        for error in errors:
            print(f"check-netpol: {path}: {error}", file=sys.stderr)
        count = sum(1 for d in docs if d.get("kind") == "NetworkPolicy")
        print(f"check-netpol: {path}: {count} NetworkPolicies, {len(errors)} problems")
        status |= bool(errors)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
