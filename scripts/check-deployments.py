#!/usr/bin/env python3
"""Checks rendered Deployments against what the `ordermesh` binary reads.

    kubectl kustomize k8s/overlays/prod > prod.yaml
    scripts/check-deployments.py prod.yaml

A misspelt environment variable is ignored by the program without a word,
and a wrong role or port only shows once pods crash-loop. So, for every
Deployment running the ordermesh image:
- its first argument is a role of `ordermesh` (a `Command` variant in
  bin/ordermesh/src/cli.rs);
- every variable it sets (env and the ConfigMaps of envFrom) is read by the
  code: `env = "NAME"` on a flag, or std::env::var("NAME"), in lib/ or bin/;
- the role's listen address (ORDERMESH_<ROLE>_ADDR) and the admin address
  bind 0.0.0.0 on ports the container declares.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
# Read by libraries rather than by name in this code.
EXTERNAL = {"RUST_LOG", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"}


def variables_read() -> set[str]:
    names = set(EXTERNAL)
    for source in [*REPO.glob("lib/*/src/**/*.rs"), *REPO.glob("bin/*/src/**/*.rs")]:
        text = source.read_text()
        names.update(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', text))
        names.update(re.findall(r'env::var(?:_os)?\(\s*"([A-Z0-9_]+)"', text))
    return names


def roles() -> set[str]:
    cli = (REPO / "bin" / "ordermesh" / "src" / "cli.rs").read_text()
    body = re.search(r"pub enum Command \{(.*?)\n\}", cli, re.S)
    return {name.lower() for name in re.findall(r"^\s+([A-Z]\w*)\s*[\(,]", body.group(1), re.M)} if body else set()


def main() -> int:
    known, valid_roles = variables_read(), roles()
    errors, checked = [], 0
    for path in sys.argv[1:]:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if isinstance(d, dict)]
        config_maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}
        for doc in docs:
            if doc.get("kind") != "Deployment":
                continue
            name = doc["metadata"]["name"]
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if "ordermesh" not in container.get("image", ""):
                    continue
                checked += 1
                at = f"{path}: Deployment/{name} container {container['name']}"
                env = {}
                for source in container.get("envFrom", []):
                    ref = (source.get("configMapRef") or {}).get("name")
                    if ref is not None and ref not in config_maps:
                        errors.append(f"{at}: envFrom ConfigMap {ref!r} is not in the build")
                    env.update(config_maps.get(ref, {}))
                env.update({e["name"]: e.get("value") for e in container.get("env", [])})
                for variable in sorted(set(env) - known):
                    errors.append(f"{at}: sets {variable}, which ordermesh does not read")
                args = container.get("args") or []
                role = args[0] if args else "all"
                if role not in valid_roles:
                    errors.append(f"{at}: role {role!r} is not one of {sorted(valid_roles)}")
                    continue
                ports = {p["containerPort"] for p in container.get("ports", [])}
                listeners = [f"ORDERMESH_{role.upper()}_ADDR"] if role != "all" else []
                for variable in [*listeners, "ORDERMESH_ADMIN_ADDR"]:
                    address = env.get(variable)
                    if address is None:
                        errors.append(f"{at}: {variable} is not set (the default binds 127.0.0.1)")
                    elif not address.startswith("0.0.0.0:") or int(address.rsplit(":", 1)[1]) not in ports:
                        errors.append(f"{at}: {variable}={address} is not 0.0.0.0 on a declared "
                                      f"containerPort {sorted(ports)}")
    for error in errors:
        print(f"check-deployments: {error}", file=sys.stderr)
    if not checked:
        errors.append("no Deployment runs the ordermesh image")
        print("check-deployments: no Deployment runs the ordermesh image", file=sys.stderr)
    print(f"check-deployments: {checked} containers: roles, environment variables and listen ports: "
          f"{'FAIL' if errors else 'ok'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
