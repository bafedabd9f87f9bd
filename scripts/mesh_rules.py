"""What istiod, the Gateway API controller and `istioctl analyze` would say.

Used by validate-istio.py. A schema-valid object can still do nothing, or
the wrong thing, and only a cluster tells you (in a status condition, or by
letting a call through). These checks say it offline, over one build (a
rendered kustomization) and its context (the rendered Kubernetes overlay it
is applied with: Services, ServiceAccounts, pods' labels, the namespace's
labels):

- object_errors, per object: VirtualService weights, retry conditions and
  fault codes; routes to a stream with no timeout that would end it and no
  retry that could repeat it; Gateway classes and waypoint listeners.
- build_errors, across objects: subsets; route parents and backends that
  exist, listeners that admit the route, ReferenceGrants for every
  cross-namespace reference, an HTTP listener beside HTTPS that only
  redirects; policy selectors that select pods, targetRefs that resolve and
  are applied (a Service's only by a waypoint), ambient namespaces' ztunnel
  policies at L4 only, ALLOW rules naming each gRPC method (no wildcard
  method), principals naming ServiceAccounts that exist, one set
  of JWT issuers, and no host routed by both APIs.
- edge_stream_errors, with the paths the gateway streams (read from the
  protos): each is routed at the edge, by the rule that takes it, as a
  stream (no timeout, no repeating retry), not swallowed by a prefix or
  catch-all with the API's short timeout.
- migration_errors, against the build a namespace moves from (sidecars to
  ambient mode, and back): applying this one over it must not replace a
  policy the old data plane enforces with one only the new one does.
"""

from __future__ import annotations

import copy
import re

import yaml

GATEWAY_GROUP = "gateway.networking.k8s.io"
# Istio's GatewayClasses and the name suffix of what it deploys for each.
ISTIO_CLASSES = {"istio": "-istio", "istio-waypoint": "", "istio-east-west": "", "istio-remote": None}
PARAMETER_KEYS = {"deployment", "service", "serviceAccount", "horizontalPodAutoscaler", "podDisruptionBudget"}

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
# A path that streams, as ordermesh names them: a REST watch (`…:watch`,
# Server-Sent Events through the gateway) or a gRPC server stream
# (`/package.Service/Watch…`), exact or as a regular expression's end.
STREAM_PATH = re.compile(r":watch\$?$|/Watch\w*\$?$")
# Retries a stream may have: the request never reached the service (a
# failed connection, a refused stream) or was refused before any message.
# Envoy never retries once it has passed an answer on, but a
# perTryTimeout would end a stream that outlives it.
STREAM_RETRY_ON = {"connect-failure", "refused-stream", "reset-before-request", "unavailable"}
# What ztunnel cannot see: an ALLOW rule naming one matches nothing there.
L7_OPERATION = {"hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"}
L7_SOURCE = {"requestPrincipals", "notRequestPrincipals", "remoteIpBlocks", "notRemoteIpBlocks"}
PRINCIPAL = re.compile(r"^[^/]+/ns/([^/]+)/sa/([^/]+)$")
# A gRPC path, /package.Service/Method: its first segment has a dot.
GRPC_PATH = re.compile(r"^/[^/]*\.")


def group_of(doc) -> str:
    """The API group ("" for the core group's v1)."""
    api = str(doc.get("apiVersion", ""))
    return api.partition("/")[0] if "/" in api else ""


def meta(doc) -> dict:
    return doc.get("metadata") or {}


def ns_of(doc, default: str = "default") -> str:
    return meta(doc).get("namespace") or default


def where(doc) -> str:
    return f"{doc.get('kind')}/{meta(doc).get('name', '?')}"


def spec(doc) -> dict:
    return doc.get("spec") or {}


# --- Per object --------------------------------------------------------------

def virtual_service_errors(doc) -> list[str]:
    errors = []
    for kind in ("http", "tcp", "tls"):
        for index, rule in enumerate(spec(doc).get(kind) or []):
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


def match_paths(doc, rule) -> list[str]:
    """The paths a route rule matches, as written (exact, prefix or regex)."""
    if doc.get("kind") == "VirtualService":
        return [str(v) for m in rule.get("match") or [] for v in ((m.get("uri") or {}).values())]
    return [str((m.get("path") or {}).get("value", "")) for m in rule.get("matches") or []]


def stream_route_errors(doc) -> list[str]:
    """A rule that routes a stream must not time it out or retry it."""
    errors = []
    key = "http" if doc.get("kind") == "VirtualService" else "rules"
    for index, rule in enumerate(spec(doc).get(key) or []):
        streams = [p for p in match_paths(doc, rule) if STREAM_PATH.search(p)]
        if not streams:
            continue
        at, first = f"spec.{key}.{index}", streams[0]
        if doc.get("kind") == "VirtualService":
            if "timeout" in rule:
                errors.append(f"{at}.timeout: {rule['timeout']} ends every stream it routes ({first})")
            retries = rule.get("retries") or {}
            if "perTryTimeout" in retries:
                errors.append(f"{at}.retries.perTryTimeout: ends every stream it routes ({first})")
            for condition in str(retries.get("retryOn", "")).split(","):
                condition = condition.strip()
                if condition and condition not in STREAM_RETRY_ON:
                    errors.append(f"{at}.retries.retryOn: {condition!r} could repeat a stream ({first}); "
                                  f"only {', '.join(sorted(STREAM_RETRY_ON))}")
        else:
            for name, value in (rule.get("timeouts") or {}).items():
                if str(value) != "0s":
                    errors.append(f"{at}.timeouts.{name}: {value} ends every stream it routes ({first}); 0s")
    return errors


def gateway_errors(doc) -> list[str]:
    gateway_class = spec(doc).get("gatewayClassName")
    if gateway_class not in ISTIO_CLASSES:
        return [f"spec.gatewayClassName: {gateway_class!r} is none of Istio's ({', '.join(sorted(ISTIO_CLASSES))})"]
    listeners = spec(doc).get("listeners") or []
    if gateway_class == "istio-waypoint" and not any(
        lst.get("protocol") == "HBONE" and lst.get("port") == 15008 for lst in listeners
    ):
        return ["spec.listeners: a waypoint needs an HBONE listener on port 15008"]
    return []


def object_errors(doc) -> list[str]:
    if doc.get("kind") == "VirtualService":
        return virtual_service_errors(doc) + stream_route_errors(doc)
    if doc.get("kind") == "HTTPRoute" and group_of(doc) == GATEWAY_GROUP:
        return stream_route_errors(doc)
    if doc.get("kind") == "Gateway" and group_of(doc) == GATEWAY_GROUP:
        return gateway_errors(doc)
    return []


# --- Across a build ----------------------------------------------------------

def host_key(host: str, namespace: str) -> str:
    """A short Service name as the FQDN Istio resolves it to."""
    return host if "." in host or host == "*" else f"{host}.{namespace}.svc.cluster.local"


class Index:
    """The build's objects and its context's, by what the checks look up."""

    def __init__(self, docs, context):
        everything = list(docs) + list(context)
        self.docs = docs
        self.services = {(ns_of(d), meta(d)["name"]): d for d in everything if d.get("kind") == "Service"}
        self.namespaces = {meta(d)["name"]: d for d in everything if d.get("kind") == "Namespace"}
        self.gateways = {(ns_of(d), meta(d)["name"]): d for d in docs
                         if d.get("kind") == "Gateway" and group_of(d) == GATEWAY_GROUP}
        self.config_maps = {(ns_of(d), meta(d)["name"]): d for d in docs if d.get("kind") == "ConfigMap"}
        self.grants = [d for d in docs if d.get("kind") == "ReferenceGrant"]
        self.accounts = {(ns_of(d), meta(d)["name"]) for d in everything if d.get("kind") == "ServiceAccount"}
        for (namespace, name), gateway in self.gateways.items():
            suffix = ISTIO_CLASSES.get(spec(gateway).get("gatewayClassName"))
            if suffix is not None:
                self.accounts.add((namespace, name + suffix))
        self.pods = []  # (namespace, labels) of every pod template
        for d in everything:
            template = (spec(d).get("jobTemplate") or {}).get("spec", spec(d)).get("template")
            if d.get("kind") == "Pod":
                self.pods.append((ns_of(d), meta(d).get("labels") or {}))
            elif isinstance(template, dict):
                self.pods.append((ns_of(d), (template.get("metadata") or {}).get("labels") or {}))

    def namespace_labels(self, namespace: str) -> dict:
        labels = dict(meta(self.namespaces.get(namespace, {})).get("labels") or {})
        labels.setdefault("kubernetes.io/metadata.name", namespace)
        return labels

    def ambient(self, namespace: str) -> bool:
        return self.namespace_labels(namespace).get("istio.io/dataplane-mode") == "ambient"

    def uses_waypoint(self, namespace: str, service: str) -> bool:
        svc = meta(self.services.get((namespace, service), {})).get("labels") or {}
        label = svc.get("istio.io/use-waypoint") or self.namespace_labels(namespace).get("istio.io/use-waypoint")
        return bool(label) and label != "none"

    def granted(self, from_kind: str, from_ns: str, to_group: str, to_kind: str, to_ns: str, name: str) -> bool:
        for grant in self.grants:
            if ns_of(grant) != to_ns:
                continue
            froms = [f for f in spec(grant).get("from") or []
                     if f.get("kind") == from_kind and f.get("namespace") == from_ns
                     and f.get("group") == GATEWAY_GROUP]
            tos = [t for t in spec(grant).get("to") or []
                   if t.get("kind") == to_kind and (t.get("group") or "") == to_group
                   and t.get("name") in (None, name)]
            if froms and tos:
                return True
        return False


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def listener_admits(index: Index, gateway, listener, route) -> str | None:
    """Why the listener refuses the route, or None."""
    allowed = listener.get("allowedRoutes") or {}
    kinds = [k.get("kind") for k in allowed.get("kinds") or []]
    if kinds and route.get("kind") not in kinds:
        return f"listener {listener.get('name')!r} takes {kinds}, not {route.get('kind')}"
    frm = (allowed.get("namespaces") or {}).get("from", "Same")
    route_ns, gateway_ns = ns_of(route), ns_of(gateway)
    if frm == "Same" and route_ns != gateway_ns:
        return f"listener {listener.get('name')!r} takes routes from {gateway_ns!r} only"
    if frm == "Selector":
        selector = (allowed.get("namespaces") or {}).get("selector") or {}
        if not selects(selector, index.namespace_labels(route_ns)):
            return f"listener {listener.get('name')!r} does not select namespace {route_ns!r}"
    return None


def route_errors(index: Index, route) -> list[str]:
    errors, route_ns = [], ns_of(route)
    for at, ref in enumerate(spec(route).get("parentRefs") or []):
        at = f"spec.parentRefs.{at}"
        ns = ref.get("namespace") or route_ns
        if ref.get("kind", "Gateway") == "Service" and (ref.get("group") or "") == "":
            svc = index.services.get((ns, ref.get("name")))
            if svc is None:
                errors.append(f"{at}: no Service {ns}/{ref.get('name')} in the build or its context")
            elif ref.get("port") is not None and ref["port"] not in {p.get("port") for p in spec(svc).get("ports") or []}:
                errors.append(f"{at}: Service {ns}/{ref.get('name')} has no port {ref['port']}")
            continue
        gateway = index.gateways.get((ns, ref.get("name")))
        if gateway is None:
            errors.append(f"{at}: no Gateway {ns}/{ref.get('name')} in the build")
            continue
        listeners = [lst for lst in spec(gateway).get("listeners") or []
                     if ref.get("sectionName") in (None, lst.get("name"))]
        if not listeners:
            errors.append(f"{at}: Gateway {ns}/{ref.get('name')} has no listener {ref.get('sectionName')!r}")
            continue
        refusals = [listener_admits(index, gateway, lst, route) for lst in listeners]
        if all(refusals):
            errors.append(f"{at}: {'; '.join(refusals)}")
        errors += redirect_errors(gateway, [lst for lst, why in zip(listeners, refusals) if not why], route, at)
    for r, rule in enumerate(spec(route).get("rules") or []):
        for b, backend in enumerate(rule.get("backendRefs") or []):
            at, ns = f"spec.rules.{r}.backendRefs.{b}", backend.get("namespace") or route_ns
            if backend.get("kind", "Service") != "Service" or backend.get("group", ""):
                continue
            svc = index.services.get((ns, backend.get("name")))
            if svc is None:
                errors.append(f"{at}: no Service {ns}/{backend.get('name')} in the build or its context")
            elif backend.get("port") not in {p.get("port") for p in spec(svc).get("ports") or []}:
                errors.append(f"{at}: Service {ns}/{backend.get('name')} has no port {backend.get('port')}")
            if ns != route_ns and not index.granted(route.get("kind"), route_ns, "", "Service", ns, backend.get("name")):
                errors.append(f"{at}: no ReferenceGrant in {ns!r} lets {route.get('kind')}s of {route_ns!r} use it")
    return errors


def redirect_errors(gateway, listeners, route, at) -> list[str]:
    """Beside an HTTPS listener, plain HTTP only redirects to HTTPS."""
    protocols = {lst.get("protocol") for lst in spec(gateway).get("listeners") or []}
    if "HTTPS" not in protocols or not any(lst.get("protocol") == "HTTP" for lst in listeners):
        return []
    for rule in spec(route).get("rules") or []:
        redirects = [f for f in rule.get("filters") or [] if f.get("type") == "RequestRedirect"
                     and (f.get("requestRedirect") or {}).get("scheme") == "https"]
        if rule.get("backendRefs") or not redirects:
            return [f"{at}: attaches to the plain-HTTP listener of a Gateway with HTTPS, and a rule of it "
                    "does more than redirect to https"]
    return []


def gateway_build_errors(index: Index, gateway) -> list[str]:
    errors, gateway_ns = [], ns_of(gateway)
    parameters = (spec(gateway).get("infrastructure") or {}).get("parametersRef")
    if parameters and parameters.get("kind") == "ConfigMap":
        config_map = index.config_maps.get((gateway_ns, parameters.get("name")))
        if config_map is None:
            errors.append(f"spec.infrastructure.parametersRef: no ConfigMap {gateway_ns}/{parameters.get('name')} in the build")
        for key, value in ((config_map or {}).get("data") or {}).items():
            if key not in PARAMETER_KEYS:
                errors.append(f"ConfigMap {parameters.get('name')}: Istio reads no key {key!r} ({sorted(PARAMETER_KEYS)})")
            elif not isinstance(yaml.safe_load(value), dict):
                errors.append(f"ConfigMap {parameters.get('name')}: {key} is not a YAML mapping")
    for l, listener in enumerate(spec(gateway).get("listeners") or []):
        for c, ref in enumerate((listener.get("tls") or {}).get("certificateRefs") or []):
            ns = ref.get("namespace") or gateway_ns
            if ns != gateway_ns and not index.granted("Gateway", gateway_ns, "", ref.get("kind", "Secret"), ns, ref.get("name")):
                errors.append(f"spec.listeners.{l}.tls.certificateRefs.{c}: no ReferenceGrant in {ns!r} lets "
                              f"Gateways of {gateway_ns!r} read Secret {ref.get('name')!r}")
    return errors


def policy_errors(index: Index, doc) -> list[str]:
    errors, namespace, kind = [], ns_of(doc), doc.get("kind")
    selector = spec(doc).get("selector")
    pods_here = [labels for ns, labels in index.pods if ns == namespace]
    if selector and pods_here and not any(selects(selector, labels) for labels in pods_here):
        errors.append(f"spec.selector: {selector.get('matchLabels')} selects no pod in {namespace!r}")
    refs = spec(doc).get("targetRefs") or ([spec(doc)["targetRef"]] if spec(doc).get("targetRef") else [])
    for r, ref in enumerate(refs):
        at, ns = f"spec.targetRefs.{r}", ref.get("namespace") or namespace
        if ref.get("kind") == "Gateway" and ref.get("group") == GATEWAY_GROUP:
            if (ns, ref.get("name")) not in index.gateways:
                errors.append(f"{at}: no Gateway {ns}/{ref.get('name')} in the build")
        elif ref.get("kind") == "Service" and not ref.get("group"):
            if (ns, ref.get("name")) not in index.services:
                errors.append(f"{at}: no Service {ns}/{ref.get('name')} in the build or its context")
            elif not index.uses_waypoint(ns, ref.get("name")):
                errors.append(f"{at}: only a waypoint applies a policy bound to a Service, and "
                              f"{ns}/{ref.get('name')} uses none (istio.io/use-waypoint)")
    if index.ambient(namespace) and not refs and kind in ("AuthorizationPolicy", "RequestAuthentication"):
        if kind == "RequestAuthentication":
            errors.append("ztunnel reads no JWT: in an ambient namespace bind it to a waypoint or a Service (targetRefs)")
        for r, rule in enumerate(spec(doc).get("rules") or []):
            l7 = sorted({k for t in rule.get("to") or [] for k in (t.get("operation") or {}) if k in L7_OPERATION}
                        | {k for f in rule.get("from") or [] for k in (f.get("source") or {}) if k in L7_SOURCE}
                        | {w.get("key") for w in rule.get("when") or [] if str(w.get("key", "")).startswith("request.")})
            if l7:
                errors.append(f"spec.rules.{r}: ztunnel enforces this policy in an ambient namespace and sees "
                              f"no {', '.join(l7)}; bind L7 rules to the waypoint or a Service (targetRefs)")
    if kind == "AuthorizationPolicy" and spec(doc).get("action", "ALLOW") == "ALLOW":
        errors += wildcard_method_errors(doc)
    for r, rule in enumerate(spec(doc).get("rules") or []):
        for f, source in enumerate(rule.get("from") or []):
            for key in ("principals", "notPrincipals"):
                for principal in (source.get("source") or {}).get(key) or []:
                    match = PRINCIPAL.match(principal)
                    if not match or "*" in principal:
                        continue
                    sa_ns, sa = match.groups()
                    known = {a for n, a in index.accounts if n == sa_ns}
                    if known and sa not in known:
                        errors.append(f"spec.rules.{r}.from.{f}.source.{key}: no ServiceAccount {sa!r} in "
                                      f"{sa_ns!r} (there are {sorted(known)})")
    return errors


def wildcard_method_errors(doc) -> list[str]:
    """Least privilege: an ALLOW rule names each gRPC method its caller
    needs. `/pkg.Service/*` (or `*`, `/*`) would let the caller reach every
    method the service has or will have (AdjustStock, an admin RPC added
    later); REST prefixes (`/v1/orders*`) are the HTTP routes' own business."""
    errors = []
    for r, rule in enumerate(spec(doc).get("rules") or []):
        for t, target in enumerate(rule.get("to") or []):
            for path in (target.get("operation") or {}).get("paths") or []:
                if "*" in path and (path in ("*", "/*") or GRPC_PATH.match(path)):
                    errors.append(f"spec.rules.{r}.to.{t}.operation.paths: {path!r} allows every method; "
                                  "list each method the caller needs")
    return errors


def subset_errors(docs) -> list[str]:
    defined = {}
    for doc in docs:
        if doc.get("kind") == "DestinationRule":
            key = host_key(str(spec(doc).get("host", "")), ns_of(doc))
            defined.setdefault(key, set()).update(s.get("name") for s in spec(doc).get("subsets") or [])
    errors = []
    for doc in docs:
        if doc.get("kind") != "VirtualService":
            continue
        for kind in ("http", "tcp", "tls"):
            for index, rule in enumerate(spec(doc).get(kind) or []):
                for destination in rule.get("route") or []:
                    target = destination.get("destination") or {}
                    host = host_key(str(target.get("host", "")), ns_of(doc))
                    if target.get("subset") and target["subset"] not in defined.get(host, set()):
                        errors.append(f"{where(doc)}: spec.{kind}.{index}: no DestinationRule defines subset "
                                      f"{target['subset']!r} of {host}")
    return errors


def mixed_api_errors(docs) -> list[str]:
    """Istio takes one routing API per host: both is undefined behaviour."""
    virtual = {host_key(h, ns_of(d)): d for d in docs if d.get("kind") == "VirtualService"
               for h in spec(d).get("hosts") or [] if not spec(d).get("gateways")}
    errors = []
    for doc in docs:
        if doc.get("kind") not in ("HTTPRoute", "GRPCRoute"):
            continue
        for ref in spec(doc).get("parentRefs") or []:
            host = f"{ref.get('name')}.{ref.get('namespace') or ns_of(doc)}.svc.cluster.local"
            if ref.get("kind") == "Service" and host in virtual:
                errors.append(f"{where(doc)}: {host} is routed by {where(virtual[host])} too; use one API per host")
    return errors


def jwt_errors(docs, context) -> list[str]:
    """Every RequestAuthentication trusts the same issuers (one to replace),
    and the services' own check (ORDERMESH_JWT_* in a ConfigMap of the
    context) trusts one of them: a mesh that lets a token through to an app
    that refuses it fails every order."""
    seen = {}
    for doc in docs:
        if doc.get("kind") == "RequestAuthentication":
            rules = frozenset((r.get("issuer"), r.get("jwksUri"), tuple(r.get("audiences") or []))
                              for r in spec(doc).get("jwtRules") or [])
            seen.setdefault(rules, []).append(f"{ns_of(doc)}/{meta(doc).get('name')}")
    if len(seen) > 1:
        return ["RequestAuthentications trust different issuers, keys or audiences: "
                + "; ".join(f"{', '.join(names)}: {sorted(map(str, rules))}" for rules, names in seen.items())]
    trusted = next(iter(seen), frozenset())
    errors = []
    for doc in context:
        data = doc.get("data") or {}
        if doc.get("kind") != "ConfigMap" or "ORDERMESH_JWT_ISSUER" not in data or not trusted:
            continue
        app = (data["ORDERMESH_JWT_ISSUER"], data.get("ORDERMESH_JWKS_URL"),
               data.get("ORDERMESH_JWT_AUDIENCE", "ordermesh"))
        if not any(app[0] == issuer and app[1] == keys and app[2] in audiences
                   for issuer, keys, audiences in trusted):
            errors.append(f"{where(doc)}: the services trust issuer {app[0]!r}, keys {app[1]!r}, audience "
                          f"{app[2]!r}; the mesh's RequestAuthentications {sorted(map(str, trusted))}")
    return errors


def build_errors(docs, context) -> list[str]:
    index = Index(docs, context)
    errors = []
    for doc in docs:
        kind, found = doc.get("kind"), []
        if kind in ("HTTPRoute", "GRPCRoute"):
            found = route_errors(index, doc)
        elif kind == "Gateway" and group_of(doc) == GATEWAY_GROUP:
            found = gateway_build_errors(index, doc)
        elif kind in ("AuthorizationPolicy", "RequestAuthentication", "PeerAuthentication", "Telemetry"):
            found = policy_errors(index, doc)
        errors += [f"{where(doc)}: {e}" for e in found]
    return errors + subset_errors(docs) + mixed_api_errors(docs) + jwt_errors(docs, context)


# --- The gateway's streams at the edge ---------------------------------------

def rest_stream_paths(proto_text: str) -> list[str]:
    """A request path of each server-streaming RPC with an HTTP GET rule in
    a .proto file, its `{variables}` filled in (`/v1/orders/x:watch`)."""
    found = re.findall(r'rpc\s+\w+\s*\([^)]*\)\s*returns\s*\(\s*stream\s+[\w.]+\s*\)\s*\{[^}]*?get:\s*"([^"]+)"',
                       proto_text)
    return [re.sub(r"\{[^}]*\}", "x", template) for template in found]


def edge_routes(docs):
    """The ingress's route objects: VirtualServices bound to a Gateway, HTTPRoutes with a Gateway parent."""
    for doc in docs:
        if doc.get("kind") == "VirtualService" and any(g != "mesh" for g in spec(doc).get("gateways") or []):
            yield doc
        elif doc.get("kind") == "HTTPRoute" and group_of(doc) == GATEWAY_GROUP and any(
                ref.get("kind", "Gateway") == "Gateway" for ref in spec(doc).get("parentRefs") or []):
            yield doc


def uri_matches(matcher: dict, path: str) -> bool:
    """Istio's StringMatch (VirtualService) or the Gateway API's path match."""
    if "type" in matcher or "value" in matcher:
        kind, value = matcher.get("type", "PathPrefix"), str(matcher.get("value", "/"))
        matcher = {{"Exact": "exact", "PathPrefix": "prefix", "RegularExpression": "regex"}[kind]: value}
    if "exact" in matcher:
        return path == matcher["exact"]
    if "prefix" in matcher:
        return path.startswith(matcher["prefix"])
    if "regex" in matcher:
        return re.fullmatch(matcher["regex"], path) is not None
    return True


def rule_taking(doc, path: str):
    """(index, rule) of the rule that takes a GET of `path`, or None. A
    VirtualService's first match wins; an HTTPRoute's exact path wins over
    the longest prefix, which wins over a regular expression (Istio)."""
    if doc.get("kind") == "VirtualService":
        for index, rule in enumerate(spec(doc).get("http") or []):
            matches = rule.get("match") or [{}]
            if any(uri_matches(m.get("uri") or {}, path)
                   and (m.get("method") or {}).get("exact", "GET") == "GET" for m in matches):
                return index, rule
        return None
    ranked = []
    for index, rule in enumerate(spec(doc).get("rules") or []):
        for m in rule.get("matches") or [{}]:
            matcher = m.get("path") or {"type": "PathPrefix", "value": "/"}
            if m.get("method", "GET") != "GET" or not uri_matches(matcher, path):
                continue
            kind = matcher.get("type", "PathPrefix")
            rank = (0, 0) if kind == "Exact" else (1, -len(str(matcher.get("value", "")))) if kind == "PathPrefix" \
                else (2, 0)
            ranked.append((rank, index, rule))
    return min(ranked, key=lambda r: (r[0], r[1]))[1:] if ranked else None


def edge_stream_errors(docs, stream_paths) -> list[str]:
    """Each of the gateway's streams is routed at the edge, as a stream."""
    errors = []
    for doc in edge_routes(docs):
        if any(f.get("type") == "RequestRedirect" for rule in spec(doc).get("rules") or []
               for f in rule.get("filters") or []):
            continue  # plain HTTP's redirect: no route to a backend
        key = "http" if doc.get("kind") == "VirtualService" else "rules"
        for path in stream_paths:
            taken = rule_taking(doc, path)
            if taken is None:
                errors.append(f"{where(doc)}: streams {path} at the gateway, but no rule here routes it")
                continue
            index, rule = taken
            alone = copy.deepcopy(doc)
            alone["spec"] = {**spec(doc), key: [{**rule, "match" if key == "http" else "matches":
                                                 [{"uri": {"exact": path}} if key == "http" else
                                                  {"path": {"type": "Exact", "value": path}}]}]}
            errors += [f"{where(doc)}: {path} is taken by " + e.replace(f"spec.{key}.0", f"spec.{key}.{index}", 1)
                       for e in stream_route_errors(alone)]
    return errors


def waypoint_only(doc) -> bool:
    """A policy only a waypoint applies: bound to a Service."""
    refs = spec(doc).get("targetRefs") or ([spec(doc)["targetRef"]] if spec(doc).get("targetRef") else [])
    return any(r.get("kind") == "Service" and not r.get("group") for r in refs)


def migration_errors(docs, previous) -> list[str]:
    """Both builds are in force while pods restart: one name, one data plane."""
    before = {(d.get("kind"), ns_of(d), meta(d).get("name")): d for d in previous}
    errors = []
    for doc in docs:
        old = before.get((doc.get("kind"), ns_of(doc), meta(doc).get("name")))
        if doc.get("kind") in ("AuthorizationPolicy", "RequestAuthentication") and old is not None \
                and waypoint_only(doc) != waypoint_only(old):
            errors.append(f"{where(doc)}: has the name of a policy of the build it migrates from, which "
                          f"{'sidecars or ztunnel' if waypoint_only(doc) else 'a waypoint'} enforce; applied "
                          "over it, it takes that policy away mid-migration: give it a name of its own")
    return errors
