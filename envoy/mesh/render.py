#!/usr/bin/env python3
"""Renders the local mesh's Envoy configs from the fragments in templates/:
one file per sidecar, plus the edge pointed at the mesh's gateway. Ports
come from the environment (see mesh.sh); CERTS, OUT, TEMPLATES and EDGE
name the folders and the edge config. Standard library only.
"""
import os
import re
from pathlib import Path

env = os.environ
templates = Path(env["TEMPLATES"])
out = Path(env["OUT"])
NS = "spiffe://cluster.local/ns/ordermesh/sa/"

# Who may call whom, and which methods: the design's calls and no others.
ORDER = r"^/ordermesh\.order\.v1\.OrderService/[A-Za-z]+$"
INVENTORY = r"^/ordermesh\.inventory\.v1\.InventoryService/[A-Za-z]+$"
INVENTORY_READS = r"^/ordermesh\.inventory\.v1\.InventoryService/(ListProducts|GetProduct|WatchStock)$"
PAYMENT = r"^/ordermesh\.payment\.v1\.PaymentService/[A-Za-z]+$"
ALLOWED = {
    "order": [("gateway", ORDER)],
    # The gateway serves the catalog: reads only, never reservations.
    "inventory": [("order", INVENTORY), ("gateway", INVENTORY_READS)],
    "payment": [("order", PAYMENT)],
}
HEALTH = {
    "order": "ordermesh.order.v1.OrderService",
    "inventory": "ordermesh.inventory.v1.InventoryService",
    "payment": "ordermesh.payment.v1.PaymentService",
}
REPLICAS = {
    "order": ["ORDER_INBOUND_PORT"],
    "inventory": ["INVENTORY1_INBOUND_PORT", "INVENTORY2_INBOUND_PORT"],
    "payment": ["PAYMENT_INBOUND_PORT"],
}


def fill(text, values):
    def value(match):
        name = match.group(1)
        if name in values:
            return str(values[name])
        raise KeyError(f"no value for ${{{name}}}")

    return re.sub(r"\$\{([A-Z0-9_]+)\}", value, text)


def template(name):
    return (templates / f"{name}.yaml").read_text()


def policies(service):
    indent = " " * 26
    lines = []
    for caller, path in ALLOWED[service]:
        regex = path.replace("\\", "\\\\")
        lines.append(
            f"from-{caller}: {{ permissions: [{{ url_path: {{ path: {{ safe_regex: {{ regex: \"{regex}\" }} }} }} }}], "
            f"principals: [{{ authenticated: {{ principal_name: {{ exact: \"{NS}{caller}\" }} }} }}] }}"
        )
    return ("\n" + indent).join(lines)


def endpoints(target):
    indent = " " * 14
    return "\n".join(
        f"{indent}- endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {env[port]} }} }} }}"
        for port in REPLICAS[target]
    )


def sidecar(name, service, admin_port, inbound=None, outbound=()):
    base = {"CERTS": env["CERTS"], "SERVICE": service, "SIDECAR": name, "ADMIN_PORT": admin_port}
    listeners, clusters = [], []
    if inbound:
        inbound_port, app_port = inbound
        values = dict(base, INBOUND_PORT=inbound_port, APP_PORT=app_port, RBAC_POLICIES=policies(service))
        listeners.append(fill(template("inbound-listener"), values))
        clusters.append(fill(template("local-app-cluster"), values))
    for target, port in outbound:
        values = dict(base, TARGET=target, OUTBOUND_PORT=port, ENDPOINTS=endpoints(target),
                      HEALTH_SERVICE=HEALTH[target])
        listeners.append(fill(template("outbound-listener"), values))
        clusters.append(fill(template("outbound-cluster"), values))
    text = fill(template("sidecar"), dict(base, LISTENERS="".join(listeners), CLUSTERS="".join(clusters)))
    (out / f"{name}.yaml").write_text(text)


admin = int(env["SIDECAR_ADMIN_PORT_BASE"])
sidecar("gateway", "gateway", admin,
        outbound=[("order", env["GATEWAY_TO_ORDER_PORT"]), ("inventory", env["GATEWAY_TO_INVENTORY_PORT"])])
sidecar("order", "order", admin + 1, inbound=(env["ORDER_INBOUND_PORT"], env["ORDER_APP_PORT"]),
        outbound=[("inventory", env["ORDER_TO_INVENTORY_PORT"]), ("payment", env["ORDER_TO_PAYMENT_PORT"])])
sidecar("inventory-1", "inventory", admin + 2,
        inbound=(env["INVENTORY1_INBOUND_PORT"], env["INVENTORY1_APP_PORT"]))
sidecar("inventory-2", "inventory", admin + 3,
        inbound=(env["INVENTORY2_INBOUND_PORT"], env["INVENTORY2_APP_PORT"]))
sidecar("payment", "payment", admin + 4, inbound=(env["PAYMENT_INBOUND_PORT"], env["PAYMENT_APP_PORT"]))

# The edge as shipped, on the mesh's ports.
edge = Path(env["EDGE"]).read_text()
for default, port in [(10000, env["EDGE_PORT"]), (9901, env["EDGE_ADMIN_PORT"]), (8080, env["GATEWAY_APP_PORT"])]:
    edge, count = re.subn(rf"port_value: {default}\b", f"port_value: {port}", edge)
    assert count >= 1, f"edge.yaml: expected port_value {default}"
(out / "edge.yaml").write_text(edge)
print(f"render: sidecar and edge configs in {out}")
