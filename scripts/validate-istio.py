#!/usr/bin/env python3
"""Validates Istio objects offline against Istio's own CRD schemas.

    scripts/validate-istio.py FILE|DIR|- ...   # every *.istio.io object in them
    scripts/validate-istio.py --self-test      # proves broken objects are refused

The schemas are the openAPIV3Schema of each CRD in Istio's crd-all.gen.yaml,
read from $ISTIO_CRDS (default: ../shared/istio/crd-all.gen.yaml beside the
repository). Without that file this fails: an unvalidated pass is no pass.

The API server is stricter than a plain JSON Schema check in ways that matter
here, so the schemas are tightened the same way before use:
- Kubernetes prunes unknown fields silently, so a typo (`retires:`) would be
  dropped without a word. Here every object schema that lists properties and
  does not set x-kubernetes-preserve-unknown-fields refuses other fields.
- x-kubernetes-int-or-string, `nullable` and the int32/int64/double/byte/
  date-time formats are enforced.
- Of the CEL rules (x-kubernetes-validations), the ones Istio's schemas use
  for durations and ports are evaluated; the others are counted and skipped.

On top of the schemas, a few checks istiod's admission webhook and
`istioctl analyze` would make, since the objects never meet either here:
route weights add up to 100, retryOn lists only known conditions, a fault's
grpcStatus is a gRPC code name, and every subset a VirtualService routes to
is defined by a DestinationRule for that host among the inputs.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime
import os
import re
import sys
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CRDS = REPO.parent / "shared" / "istio" / "crd-all.gen.yaml"

# Envoy's retry conditions as Istio accepts them (besides HTTP status codes).
RETRY_ON = {
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
    "envoy-ratelimited", "retriable-4xx", "refused-stream",
    "retriable-status-codes", "retriable-headers", "http3-post-connect-failure",
    "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
    "unavailable",
}
GRPC_CODES = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}


# --- Go durations and the CEL rules we can evaluate -------------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float | None:
    """Seconds in a Go duration ("1.5s", "1h2m", "0"), or None if malformed."""
    if text == "0":
        return 0.0
    if not text or _DURATION_PART.sub("", text) != "":
        return None
    return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))


# Counts the CEL rules met that only the API server can evaluate.
STATS = {"cel_skipped": 0}

_MIN_DURATION_RULE = re.compile(r"^duration\(self\) >= duration\('([^']+)'\)$")
_PORT_RULE = "0 < self && self <= 65535"


def check_cel_rules(validator, rules, instance, schema):
    """A jsonschema keyword for x-kubernetes-validations: the rule shapes
    Istio's schemas use for durations and ports; others are only counted."""
    for rule in rules:
        text = " ".join(rule.get("rule", "").split())
        minimum = _MIN_DURATION_RULE.match(text)
        if minimum and isinstance(instance, str):
            seconds = parse_duration(instance)
            if seconds is None or seconds < parse_duration(minimum.group(1)):
                yield jsonschema.ValidationError(
                    f"{instance!r}: {rule.get('message', text)}"
                )
        elif text == _PORT_RULE and isinstance(instance, int):
            if not 0 < instance <= 65535:
                yield jsonschema.ValidationError(f"{instance}: {rule.get('message', text)}")
        elif not minimum and text != _PORT_RULE:
            STATS["cel_skipped"] += 1


FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("int32")
def _int32(value):
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMATS.checks("int64")
def _int64(value):
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@FORMATS.checks("double")
def _double(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@FORMATS.checks("byte", raises=ValueError)
def _byte(value):
    if isinstance(value, str):
        base64.b64decode(value, validate=True)
    return True


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value):
    if isinstance(value, str):
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


Validator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {"x-kubernetes-validations": check_cel_rules}
)


# --- Schemas -----------------------------------------------------------------

def tighten(node: dict, in_junctor: bool = False) -> dict:
    """Makes an OpenAPI v3 structural schema behave as the API server does."""
    if node.get("nullable") and "type" in node:
        node["type"] = [node["type"], "null"]
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    # oneOf/anyOf branches only name required fields in structural schemas;
    # closing them would refuse the fields the outer schema allows.
    if (
        "properties" in node
        and not in_junctor
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in node
    ):
        node["additionalProperties"] = False
    for child in node.get("properties", {}).values():
        tighten(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            tighten(node[key])
    for key in ("oneOf", "anyOf", "allOf"):
        for branch in node.get(key, []):
            tighten(branch, in_junctor=True)
    if isinstance(node.get("not"), dict):
        tighten(node["not"], in_junctor=True)
    return node


NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


def load_crds(path: Path) -> dict:
    """(group, version, kind) -> (validator, served) for every CRD in path."""
    schemas = {}
    with path.open() as file:
        for crd in yaml.safe_load_all(file):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                properties = version["schema"]["openAPIV3Schema"].get("properties", {})
                envelope = {
                    "type": "object",
                    "required": ["apiVersion", "kind", "metadata"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {"name": {"type": "string", "pattern": NAME}},
                        },
                        "spec": tighten(copy.deepcopy(properties.get("spec", {}))),
                    },
                    # Only what a manifest may carry: no status, no typos.
                    "additionalProperties": False,
                }
                key = (spec["group"], version["name"], spec["names"]["kind"])
                schemas[key] = (Validator(envelope, format_checker=FORMATS), version.get("served", False))
    if not schemas:
        raise SystemExit(f"validate-istio: no CustomResourceDefinition in {path}")
    return schemas


# --- Checks ------------------------------------------------------------------

def is_istio(doc) -> bool:
    group = str(doc.get("apiVersion", "")).partition("/")[0]
    return group == "istio.io" or group.endswith(".istio.io")


def where(doc) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind')}/{meta.get('name', '?')}"


def schema_errors(doc, schemas) -> list[str]:
    group, _, version = str(doc.get("apiVersion", "")).partition("/")
    entry = schemas.get((group, version, doc.get("kind")))
    if entry is None:
        return [f"no Istio CRD defines kind {doc.get('kind')!r} in {doc.get('apiVersion')!r}"]
    validator, served = entry
    if not served:
        return [f"{doc['apiVersion']} is not served by Istio any more"]
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def route_errors(doc) -> list[str]:
    """What istiod's webhook checks on routes and this project relies on."""
    if doc.get("kind") != "VirtualService":
        return []
    errors = []
    spec = doc.get("spec") or {}
    for kind in ("http", "tcp", "tls"):
        for index, rule in enumerate(spec.get(kind) or []):
            at = f"spec.{kind}.{index}"
            route = rule.get("route") or []
            if len(route) > 1:
                total = sum(destination.get("weight", 0) for destination in route)
                if total != 100:
                    errors.append(f"{at}.route: weights add up to {total}, not 100")
            if kind != "http":
                continue
            for condition in str((rule.get("retries") or {}).get("retryOn", "")).split(","):
                condition = condition.strip()
                if condition and condition not in RETRY_ON and not re.fullmatch(r"[1-5]\d\d", condition):
                    errors.append(f"{at}.retries.retryOn: unknown condition {condition!r}")
            status = ((rule.get("fault") or {}).get("abort") or {}).get("grpcStatus")
            if status is not None and status not in GRPC_CODES:
                errors.append(f"{at}.fault.abort.grpcStatus: {status!r} is not a gRPC code name")
    return errors


def host_key(host: str, namespace: str) -> str:
    """A short Service name as the FQDN Istio resolves it to."""
    return host if "." in host or host == "*" else f"{host}.{namespace}.svc.cluster.local"


def subset_errors(docs) -> list[str]:
    defined = {}
    for doc in docs:
        if doc.get("kind") == "DestinationRule":
            spec = doc.get("spec") or {}
            namespace = (doc.get("metadata") or {}).get("namespace", "default")
            key = host_key(str(spec.get("host", "")), namespace)
            defined.setdefault(key, set()).update(s.get("name") for s in spec.get("subsets") or [])
    errors = []
    for doc in docs:
        if doc.get("kind") != "VirtualService":
            continue
        namespace = (doc.get("metadata") or {}).get("namespace", "default")
        for kind in ("http", "tcp", "tls"):
            for index, rule in enumerate((doc.get("spec") or {}).get(kind) or []):
                for destination in rule.get("route") or []:
                    target = destination.get("destination") or {}
                    subset = target.get("subset")
                    host = host_key(str(target.get("host", "")), namespace)
                    if subset and subset not in defined.get(host, set()):
                        errors.append(
                            f"{where(doc)}: spec.{kind}.{index}: no DestinationRule defines subset "
                            f"{subset!r} of {host}"
                        )
    return errors


def validate(docs, schemas) -> list[str]:
    errors = []
    for doc in docs:
        errors += [f"{where(doc)}: {e}" for e in schema_errors(doc, schemas) + route_errors(doc)]
    return errors + subset_errors(docs)


# --- Input -------------------------------------------------------------------

def read_documents(arguments) -> list[tuple[str, dict]]:
    """(source, object) for every mapping in the YAML files, dirs or stdin."""
    found = []
    for argument in arguments:
        if argument == "-":
            sources = [("<stdin>", sys.stdin.read())]
        else:
            path = Path(argument)
            files = sorted(path.rglob("*.y*ml")) if path.is_dir() else [path]
            sources = [(str(f), f.read_text()) for f in files if f.suffix in (".yaml", ".yml")]
        for name, text in sources:
            found += [(name, doc) for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]
    return found


# --- Self-test -----------------------------------------------------------------

GOOD = [
    {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "order", "namespace": "t"},
        "spec": {"hosts": ["order"], "http": [{
            "route": [
                {"destination": {"host": "order", "subset": "v1"}, "weight": 90},
                {"destination": {"host": "order", "subset": "v2"}, "weight": 10},
            ],
            "timeout": "1.5s",
            "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "unavailable,reset,503"},
            "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 10.5}}},
            "match": [{"headers": {"idempotency-key": {}}}, {"uri": {"prefix": "/x"}}],
        }]},
    },
    {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "order", "namespace": "t"},
        "spec": {"host": "order.t.svc.cluster.local",
                 "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 10}}},
                 "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                             {"name": "v2", "labels": {"version": "v2"}}]},
    },
]


def broken(change):
    docs = copy.deepcopy(GOOD)
    change(docs)
    return docs


# Each must be refused, with an error containing the given text.
BROKEN = {
    "misspelt field": (lambda d: d[0]["spec"]["http"][0].__setitem__("retires", {}), "retires"),
    "misspelt nested field": (
        lambda d: d[0]["spec"]["http"][0]["retries"].__setitem__("perTryTimout", "1s"), "perTryTimout"),
    "misspelt field in a map value": (
        lambda d: d[0]["spec"]["http"][0]["match"][0]["headers"].__setitem__("k", {"exakt": "x"}), "exakt"),
    "wrong type": (
        lambda d: d[1]["spec"]["trafficPolicy"]["connectionPool"]["tcp"].__setitem__("maxConnections", "many"),
        "maxConnections"),
    "int32 out of range": (
        lambda d: d[1]["spec"]["trafficPolicy"]["connectionPool"]["tcp"].__setitem__("maxConnections", 2**40),
        "int32"),
    "value not in enum": (lambda d: d[1]["spec"]["trafficPolicy"].__setitem__("tls", {"mode": "MUTUAL_TLS"}),
                          "MUTUAL_TLS"),
    "zero timeout (CEL rule)": (lambda d: d[0]["spec"]["http"][0].__setitem__("timeout", "0s"), "1ms"),
    "malformed duration (CEL rule)": (lambda d: d[0]["spec"]["http"][0].__setitem__("timeout", "2 seconds"),
                                      "duration"),
    "two string matchers at once": (
        lambda d: d[0]["spec"]["http"][0]["match"][1]["uri"].__setitem__("exact", "/y"), "match"),
    "unknown kind": (lambda d: d[0].__setitem__("kind", "VirtualServis"), "VirtualServis"),
    "unknown version": (lambda d: d[0].__setitem__("apiVersion", "networking.istio.io/v9"), "v9"),
    "top-level typo": (lambda d: d[0].__setitem__("sepc", {}), "sepc"),
    "status in a manifest": (lambda d: d[1].__setitem__("status", {}), "status"),
    "weights not adding up to 100": (
        lambda d: d[0]["spec"]["http"][0]["route"][1].__setitem__("weight", 20), "110"),
    "unknown retry condition": (
        lambda d: d[0]["spec"]["http"][0]["retries"].__setitem__("retryOn", "unavilable"), "unavilable"),
    "unknown gRPC status": (
        lambda d: d[0]["spec"]["http"][0]["fault"]["abort"].__setitem__("grpcStatus", "UNAVAILIBLE"),
        "UNAVAILIBLE"),
    "subset no DestinationRule defines": (lambda d: d[1]["spec"]["subsets"].pop(), "'v2'"),
}


def self_test(schemas) -> int:
    failures = []
    if errors := validate(GOOD, schemas):
        failures.append(f"valid objects were refused: {errors}")
    for name, (change, expected) in BROKEN.items():
        errors = validate(broken(change), schemas)
        if not any(expected in error for error in errors):
            failures.append(f"{name}: not refused as expected (errors: {errors or 'none'})")
        else:
            print(f"validate-istio self-test: refused {name}: {errors[0]}")
    for failure in failures:
        print(f"validate-istio self-test: FAIL {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"validate-istio self-test: ok ({len(BROKEN)} broken inputs refused, valid ones accepted)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="YAML files, directories, or - for stdin")
    parser.add_argument("--self-test", action="store_true", help="check that broken objects are refused")
    parser.add_argument("--crds", type=Path, default=Path(os.environ.get("ISTIO_CRDS") or DEFAULT_CRDS),
                        help="Istio's crd-all.gen.yaml (env ISTIO_CRDS)")
    parser.add_argument("--label", help="name the input so in the report (e.g. the kustomization)")
    parser.add_argument("--require", type=int, default=0, metavar="N",
                        help="fail unless at least N Istio objects were found")
    args = parser.parse_args()

    if not args.crds.is_file():
        print(f"validate-istio: FAIL: Istio CRD file {args.crds} not found; set ISTIO_CRDS to "
              "Istio's manifests/charts/base/files/crd-all.gen.yaml", file=sys.stderr)
        return 2
    schemas = load_crds(args.crds)
    if args.self_test:
        return self_test(schemas)

    documents = read_documents(args.paths)
    istio = [doc for _, doc in documents if is_istio(doc)]
    errors = validate(istio, schemas)
    for error in errors:
        print(f"validate-istio: {error}", file=sys.stderr)
    sources = args.label or ", ".join(sorted({source for source, _ in documents})) or "no input"
    print(f"validate-istio: {len(istio)} Istio objects in {sources} "
          f"({len(documents) - len(istio)} other objects skipped; {STATS['cel_skipped']} CEL rules "
          f"not evaluated): {'FAIL' if errors else 'ok'}")
    if len(istio) < args.require:
        print(f"validate-istio: FAIL: expected at least {args.require} Istio objects", file=sys.stderr)
        return 1
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
