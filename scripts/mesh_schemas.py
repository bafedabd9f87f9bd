"""CRD schemas checked as the Kubernetes API server checks them, offline.

Used by validate-istio.py for Istio's CRDs and the Gateway API's. The API
server is stricter than a plain JSON Schema check in ways that matter here,
so each schema is tightened the same way before use:
- Kubernetes prunes unknown fields silently, so a typo (`retires:`) would be
  dropped without a word. Here every object schema that lists properties and
  does not set x-kubernetes-preserve-unknown-fields refuses other fields.
- Defaults are filled in first, as the API server does before validating
  (the Gateway API's rules rely on them: a backendRef's kind is "Service"
  unless it says otherwise).
- Every CEL rule (x-kubernetes-validations) is evaluated with cel-python,
  with the Kubernetes library functions the schemas call and Kubernetes'
  escaping of property names that are CEL keywords (`namespace` is
  `__namespace__`). Transition rules (oldSelf) need a stored object: skipped
  and counted. A rule that cannot be evaluated fails, as it does there.
- x-kubernetes-list-type set/map uniqueness, x-kubernetes-int-or-string,
  `nullable` and the int32/int64/double/byte/date-time formats.
"""

from __future__ import annotations

import base64
import copy
import datetime
import ipaddress
import json
import re
import urllib.parse
from pathlib import Path

import celpy
import jsonschema
import yaml
from celpy import celtypes

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Rules met: evaluated, and transition rules that need the stored object.
STATS = {"cel_evaluated": 0, "cel_skipped": 0}


# --- CEL ---------------------------------------------------------------------

def _is_url(value) -> bool:
    # Kubernetes' isURL: an absolute URI or an absolute path.
    try:
        parts = urllib.parse.urlsplit(str(value))
    except ValueError:
        return False
    return bool(parts.scheme and (parts.netloc or parts.path)) or str(value).startswith("/")


def _url(value):
    if not _is_url(value):
        raise ValueError(f"{value!r} is not a URL")
    return celtypes.StringType(str(value))


def _ip(value) -> bool:
    try:
        ipaddress.ip_address(str(value))
    except ValueError:
        return False
    return True


def _substring(text, start, end=None):
    text = str(text)
    return celtypes.StringType(text[int(start):] if end is None else text[int(start):int(end)])


# Kubernetes' CEL libraries, as far as Istio's and the Gateway API's rules use them.
FUNCTIONS = {
    "isURL": lambda v: celtypes.BoolType(_is_url(v)),
    "url": _url,
    "getScheme": lambda u: celtypes.StringType(urllib.parse.urlsplit(str(u)).scheme),
    "isIP": lambda v: celtypes.BoolType(_ip(v)),
    "split": lambda s, sep: celtypes.ListType([celtypes.StringType(p) for p in str(s).split(str(sep))]),
    "substring": _substring,
}

_ENVIRONMENT = celpy.Environment()
_PROGRAMS: dict[str, object] = {}

# Property names Kubernetes escapes in CEL (k8s.io/apiserver/pkg/cel).
_RESERVED = {"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for",
             "function", "if", "import", "let", "loop", "package", "namespace", "return", "var",
             "void", "while"}


def escape(name: str) -> str:
    if name in _RESERVED:
        return f"__{name}__"
    return (name.replace("__", "__underscores__").replace(".", "__dot__")
            .replace("-", "__dash__").replace("/", "__slash__"))


def to_cel(value, schema: dict):
    """A JSON value as CEL sees it under schema: struct fields escaped."""
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if value is None:
        return None
    if isinstance(value, list):
        items = schema.get("items") or {}
        return celtypes.ListType([to_cel(v, items) for v in value])
    properties = schema.get("properties")
    if properties is not None:
        return celtypes.MapType({
            celtypes.StringType(escape(k)): to_cel(v, properties.get(k) or {}) for k, v in value.items()
        })
    extra = schema.get("additionalProperties")
    extra = extra if isinstance(extra, dict) else {}
    return celtypes.MapType({celtypes.StringType(k): to_cel(v, extra) for k, v in value.items()})


def program(rule: str):
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENVIRONMENT.program(_ENVIRONMENT.compile(rule), functions=FUNCTIONS)
    return _PROGRAMS[rule]


_RESULTS: dict[tuple[str, str], object] = {}


def evaluate(rule: str, instance, schema: dict):
    """The rule's result on instance, or the error it raised. Remembered:
    cel-python takes milliseconds a rule, and builds share most objects."""
    key = (rule, json.dumps(instance, sort_keys=True, default=str))
    if key not in _RESULTS:
        try:
            _RESULTS[key] = program(rule).evaluate({"self": to_cel(instance, schema)})
        except Exception as error:  # cel-python raises CELEvalError and kin
            _RESULTS[key] = error
    return _RESULTS[key]


def check_cel_rules(validator, rules, instance, schema):
    """jsonschema keyword x-kubernetes-validations: every rule, evaluated."""
    for rule in rules:
        text = rule.get("rule", "")
        if re.search(r"\boldSelf\b", text):
            STATS["cel_skipped"] += 1
            continue
        STATS["cel_evaluated"] += 1
        message = rule.get("message") or " ".join(text.split())
        result = evaluate(text, instance, schema)
        if isinstance(result, Exception):
            yield jsonschema.ValidationError(f"{message} (the rule could not be evaluated: {result})")
        elif not bool(result):
            yield jsonschema.ValidationError(f"{_short(instance)}: {message}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def check_list_type(validator, list_type, instance, schema):
    """jsonschema keyword x-kubernetes-list-type: sets and maps hold no duplicates."""
    if not isinstance(instance, list) or list_type not in ("set", "map"):
        return
    keys = schema.get("x-kubernetes-list-map-keys") or []
    seen = set()
    for item in instance:
        key = (tuple(repr(item.get(k)) for k in keys) if list_type == "map" and isinstance(item, dict)
               else repr(item))
        if key in seen:
            what = dict(zip(keys, key)) if list_type == "map" else item
            yield jsonschema.ValidationError(f"duplicate entry {what} in a list of type {list_type}")
        seen.add(key)


# --- Formats -----------------------------------------------------------------

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
    jsonschema.Draft7Validator,
    {"x-kubernetes-validations": check_cel_rules, "x-kubernetes-list-type": check_list_type},
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


def apply_defaults(instance, schema: dict):
    """Fills in schema defaults as the API server does before validating."""
    if isinstance(instance, dict):
        properties = schema.get("properties") or {}
        for name, sub in properties.items():
            if name not in instance and "default" in sub:
                instance[name] = copy.deepcopy(sub["default"])
        for name, value in instance.items():
            sub = properties.get(name)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                apply_defaults(value, sub)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for item in instance:
            apply_defaults(item, schema["items"])
    return instance


DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


class Schema:
    """One served version of one CRD: validate() and defaults()."""

    def __init__(self, root: dict, served: bool, source: Path):
        self.served, self.source = served, source
        properties = root.get("properties", {})
        self.spec = tighten(copy.deepcopy(properties.get("spec", {})))
        envelope = {
            "type": "object",
            "required": ["apiVersion", "kind", "metadata"],
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "metadata": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": DNS_SUBDOMAIN, "maxLength": 253},
                        "namespace": {"type": "string", "pattern": DNS_LABEL, "maxLength": 63},
                        "labels": STRING_MAP,
                        "annotations": STRING_MAP,
                    },
                },
                "spec": self.spec,
            },
            # Only what a manifest may carry: no status, no typos.
            "additionalProperties": False,
        }
        if root.get("x-kubernetes-validations"):
            envelope["x-kubernetes-validations"] = root["x-kubernetes-validations"]
        self.validator = Validator(envelope, format_checker=FORMATS)

    def defaults(self, doc: dict) -> dict:
        if isinstance(doc.get("spec"), dict):
            apply_defaults(doc["spec"], self.spec)
        return doc

    def errors(self, doc: dict) -> list[str]:
        found = sorted(self.validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
        return [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in found]


def load_crds(*paths: Path) -> dict:
    """(group, version, kind) -> Schema for every CRD in the files."""
    schemas = {}
    for path in paths:
        with path.open() as file:
            crds = [d for d in yaml.load_all(file, Loader=Loader) if d and d.get("kind") == "CustomResourceDefinition"]
        if not crds:
            raise SystemExit(f"validate-istio: no CustomResourceDefinition in {path}")
        for crd in crds:
            spec = crd["spec"]
            for version in spec["versions"]:
                key = (spec["group"], version["name"], spec["names"]["kind"])
                schemas[key] = Schema(version["schema"]["openAPIV3Schema"], version.get("served", False), path)
    return schemas
