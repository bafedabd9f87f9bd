"""validate-istio.py --self-test: a valid build is accepted, and each broken
variant of it is refused with the error expected, so every check is shown
to be able to fail (an unknown field, a CEL rule, a default a rule relies
on, a reference that does not resolve, a policy that applies to nothing)."""

from __future__ import annotations

import copy
import sys

JWT = {"issuer": "https://issuer.example/t", "audiences": ["t"],
       "jwksUri": "https://issuer.example/t/keys", "forwardOriginalToken": True}
GW = "gateway.networking.k8s.io/v1"


def obj(api, kind, namespace, name, spec=None, **extra):
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace},
            **({"spec": spec} if spec is not None else {}), **extra}


# The cluster around the build: an ambient namespace `t` using the waypoint.
CONTEXT = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t", "labels": {
        "istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint"}}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "edge"}},
    obj("v1", "Service", "t", "order", {"ports": [{"port": 50051}]}),
    obj("v1", "Service", "t", "gateway", {"ports": [{"port": 8080}]}),
    obj("v1", "ServiceAccount", "t", "order"),
    obj("v1", "ServiceAccount", "t", "gateway"),
    obj("apps/v1", "Deployment", "t", "order", {"template": {"metadata": {"labels": {"app": "order"}}}}),
    obj("v1", "ConfigMap", "t", "ordermesh-config", data={
        "ORDERMESH_JWT_ISSUER": JWT["issuer"], "ORDERMESH_JWKS_URL": JWT["jwksUri"], "ORDERMESH_JWT_AUDIENCE": "t"}),
]

GOOD = [
    # 0, 1: Istio's routing API, in a namespace of its own.
    obj("networking.istio.io/v1", "VirtualService", "s", "order", {"hosts": ["order"], "http": [{
        "route": [
            {"destination": {"host": "order", "subset": "v1"}, "weight": 90},
            {"destination": {"host": "order", "subset": "v2"}, "weight": 10},
        ],
        "timeout": "1.5s",
        "retries": {"attempts": 3, "perTryTimeout": "500ms", "retryOn": "unavailable,reset,503"},
        "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 10.5}}},
        "match": [{"headers": {"idempotency-key": {}}}, {"uri": {"prefix": "/x"}}],
    }]}),
    obj("networking.istio.io/v1", "DestinationRule", "s", "order", {
        "host": "order.s.svc.cluster.local",
        "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 10}}},
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}]}),
    # 2-6: an ingress Gateway, HTTPS with a certificate from `t`, HTTP redirecting.
    obj(GW, "Gateway", "edge", "ingress", {
        "gatewayClassName": "istio",
        "infrastructure": {"parametersRef": {"group": "", "kind": "ConfigMap", "name": "params"}},
        "listeners": [
            {"name": "https", "protocol": "HTTPS", "port": 443,
             "tls": {"mode": "Terminate", "certificateRefs": [{"name": "tls", "namespace": "t"}]},
             "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {
                 "matchLabels": {"kubernetes.io/metadata.name": "t"}}}}},
            {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": {"namespaces": {"from": "Same"}}},
        ]}),
    obj("v1", "ConfigMap", "edge", "params", data={"deployment": "spec: {}\n"}),
    obj("gateway.networking.k8s.io/v1beta1", "ReferenceGrant", "t", "tls", {
        "from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "edge"}],
        "to": [{"group": "", "kind": "Secret", "name": "tls"}]}),
    obj(GW, "HTTPRoute", "edge", "redirect", {
        "parentRefs": [{"name": "ingress", "sectionName": "http"}],
        "rules": [{"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "https", "statusCode": 301}}]}]}),
    obj(GW, "HTTPRoute", "t", "edge", {
        "parentRefs": [{"name": "ingress", "namespace": "edge", "sectionName": "https"}],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1/orders"}}],
                   "timeouts": {"request": "20s"}, "backendRefs": [{"name": "gateway", "port": 8080}]}]}),
    # 7-9: the waypoint and mesh routes.
    obj(GW, "Gateway", "t", "waypoint", {"gatewayClassName": "istio-waypoint", "listeners": [
        {"name": "mesh", "port": 15008, "protocol": "HBONE"}]}),
    obj(GW, "HTTPRoute", "t", "order", {
        "parentRefs": [{"group": "", "kind": "Service", "name": "order", "port": 50051}],
        "rules": [{"timeouts": {"request": "15s"}, "backendRefs": [{"name": "order", "port": 50051}]}]}),
    obj(GW, "GRPCRoute", "t", "order-grpc", {
        "parentRefs": [{"group": "", "kind": "Service", "name": "order", "port": 50051}],
        "rules": [{"matches": [{"method": {"service": "ordermesh.order.v1.OrderService"}}],
                   "backendRefs": [{"name": "order", "port": 50051}]}]}),
    # 10-13: L7 at the waypoint, L4 at ztunnel, tokens at the waypoint and the edge.
    obj("security.istio.io/v1", "AuthorizationPolicy", "t", "order-l7", {
        "targetRefs": [{"group": "", "kind": "Service", "name": "order"}], "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/t/sa/gateway"], "requestPrincipals": ["*"]}}],
                   "to": [{"operation": {"ports": ["50051"], "paths": ["/ordermesh.order.v1.OrderService/GetOrder"]}}]}]}),
    obj("security.istio.io/v1", "AuthorizationPolicy", "t", "order-l4", {
        "selector": {"matchLabels": {"app": "order"}}, "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/t/sa/waypoint"]}}],
                   "to": [{"operation": {"ports": ["50051"]}}]}]}),
    obj("security.istio.io/v1", "RequestAuthentication", "t", "order-jwt", {
        "targetRefs": [{"group": "", "kind": "Service", "name": "order"}], "jwtRules": [dict(JWT)]}),
    obj("security.istio.io/v1", "RequestAuthentication", "edge", "jwt", {
        "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ingress"}],
        "jwtRules": [dict(JWT)]}),
]


def at(d, *path):
    """The node at path in d (a list of objects, then keys and indexes)."""
    for key in path:
        d = d[key]
    return d


def put(value, *path):
    return lambda d, c: at(d, *path[:-1]).__setitem__(path[-1], value)


def drop(*path):
    return lambda d, c: at(d, *path[:-1]).pop(path[-1])


HTTP0 = (0, "spec", "http", 0)
EDGE_RULE = (6, "spec", "rules", 0)
LISTENERS = (2, "spec", "listeners")

# name: (change to GOOD or CONTEXT, text the error must contain)
BROKEN = {
    # The schemas, strictly.
    "misspelt field": (put({}, *HTTP0, "retires"), "retires"),
    "misspelt nested field": (put("1s", *HTTP0, "retries", "perTryTimout"), "perTryTimout"),
    "misspelt field in a map value": (put({"exakt": "x"}, *HTTP0, "match", 0, "headers", "k"), "exakt"),
    "wrong type": (put("many", 1, "spec", "trafficPolicy", "connectionPool", "tcp", "maxConnections"), "maxConnections"),
    "int32 out of range": (put(2**40, 1, "spec", "trafficPolicy", "connectionPool", "tcp", "maxConnections"), "int32"),
    "value not in enum": (put({"mode": "MUTUAL_TLS"}, 1, "spec", "trafficPolicy", "tls"), "MUTUAL_TLS"),
    "two string matchers at once": (put("/y", *HTTP0, "match", 1, "uri", "exact"), "match"),
    "unknown kind": (put("VirtualServis", 0, "kind"), "VirtualServis"),
    "unknown version": (put("networking.istio.io/v9", 0, "apiVersion"), "v9"),
    "top-level typo": (put({}, 0, "sepc"), "sepc"),
    "status in a manifest": (put({}, 1, "status"), "status"),
    "misspelt field in an HTTPRoute": (put("5s", *EDGE_RULE, "timeout"), "'timeout' was unexpected"),
    "misspelt field in a Gateway listener": (put({}, *LISTENERS, 1, "allowedRoute"), "allowedRoute"),
    "unknown Gateway API version": (put("gateway.networking.k8s.io/v9", 6, "apiVersion"), "v9"),
    "status in a Gateway API manifest": (put({}, 6, "status"), "status"),
    "retry on an HTTPRoute (experimental channel only)": (put({"attempts": 2}, *EDGE_RULE, "retry"), "retry"),
    "timeouts on a GRPCRoute (not in the standard channel)": (
        put({"request": "1s"}, 9, "spec", "rules", 0, "timeouts"), "timeouts"),
    "redirect status not in enum": (put(399, 5, "spec", "rules", 0, "filters", 0, "requestRedirect", "statusCode"), "399"),
    "bad name": (put("Order_1", 8, "metadata", "name"), "Order_1"),
    # CEL rules, Istio's and the Gateway API's.
    "zero timeout (CEL)": (put("0s", *HTTP0, "timeout"), "1ms"),
    "malformed duration (CEL)": (put("2 seconds", *HTTP0, "timeout"), "could not be evaluated"),
    "JWKS not over http(s) (CEL, url())": (put("ftp://issuer.example/keys", 12, "spec", "jwtRules", 0, "jwksUri"),
                                           "url must have scheme"),
    "selector and targetRefs at once (CEL)": (put({"matchLabels": {"app": "order"}}, 10, "spec", "selector"),
                                              "only one of targetRefs or selector"),
    "tls on an HTTP listener (CEL)": (put({"mode": "Terminate"}, *LISTENERS, 1, "tls"), "tls must not be specified"),
    "two listeners with one name (CEL, list map)": (put("https", *LISTENERS, 1, "name"), "Listener name must be unique"),
    "redirect beside backendRefs (CEL)": (put([{"name": "gateway", "port": 8080}], 5, "spec", "rules", 0, "backendRefs"),
                                          "must not be used together with backendRefs"),
    "backendRequest longer than request (CEL)": (put({"request": "1s", "backendRequest": "2s"}, *EDGE_RULE, "timeouts"),
                                                 "cannot be longer than request"),
    "Service backendRef without a port (CEL on a default)": (drop(*EDGE_RULE, "backendRefs", 0, "port"),
                                                             "Must have port for Service reference"),
    "path with // (CEL)": (put("/v1//orders", *EDGE_RULE, "matches", 0, "path", "value"), "must not contain '//'"),
    "one parent twice (CEL on an escaped field, namespace)": (
        lambda d, c: at(d, 6, "spec", "parentRefs").append(dict(at(d, 6, "spec", "parentRefs", 0))),
        "sectionName must be unique"),
    "bad gRPC service name (CEL)": (put("order service", 9, "spec", "rules", 0, "matches", 0, "method", "service"),
                                    "order service"),
    # What istiod and the Gateway API controller would report.
    "weights not adding up to 100": (put(20, *HTTP0, "route", 1, "weight"), "110"),
    "unknown retry condition": (put("unavilable", *HTTP0, "retries", "retryOn"), "unavilable"),
    "a stream with a timeout": (put({"exact": "/v1/events:watch"}, *HTTP0, "match", 1, "uri"),
                                "1.5s ends every stream"),
    "a stream with a per-try timeout": (lambda d, c: (at(d, *HTTP0, "match", 1).update(
        uri={"regex": "^/v1/events(/stock)?:watch$"}), at(d, *HTTP0).pop("timeout")),
        "perTryTimeout: ends every stream"),
    "a stream retried on reset": (lambda d, c: (at(d, *HTTP0, "match", 1).update(
        uri={"exact": "/ordermesh.order.v1.OrderService/WatchOrder"}), at(d, *HTTP0).pop("timeout"),
        at(d, *HTTP0, "retries").pop("perTryTimeout")), "'reset' could repeat a stream"),
    "an HTTPRoute timing a stream out": (put("/v1/events/stock:watch", *EDGE_RULE, "matches", 0, "path", "value"),
                                         "timeouts.request: 20s ends every stream"),
    "unknown gRPC status": (put("UNAVAILIBLE", *HTTP0, "fault", "abort", "grpcStatus"), "UNAVAILIBLE"),
    "subset no DestinationRule defines": (lambda d, c: at(d, 1, "spec", "subsets").pop(), "'v2'"),
    "a class Istio does not implement": (put("nginx", 2, "spec", "gatewayClassName"), "none of Istio's"),
    "a waypoint without HBONE on 15008": (put(15009, 7, "spec", "listeners", 0, "port"), "HBONE listener on port 15008"),
    "parametersRef to no ConfigMap": (put("paramz", 2, "spec", "infrastructure", "parametersRef", "name"), "no ConfigMap"),
    "certificate of another namespace without a ReferenceGrant": (put("other", 4, "spec", "to", 0, "name"),
                                                                  "no ReferenceGrant in 't'"),
    "route to no Service": (put("gatewy", *EDGE_RULE, "backendRefs", 0, "name"), "no Service t/gatewy"),
    "route to a port the Service lacks": (put(8081, *EDGE_RULE, "backendRefs", 0, "port"), "has no port 8081"),
    "route to no listener": (put("httpz", 6, "spec", "parentRefs", 0, "sectionName"), "no listener 'httpz'"),
    "listener that refuses the route's namespace": (put({"from": "Same"}, *LISTENERS, 0, "allowedRoutes", "namespaces"),
                                                    "takes routes from 'edge' only"),
    "plain HTTP that does more than redirect": (
        put([{"backendRefs": [{"name": "gateway", "namespace": "t", "port": 8080}]}], 5, "spec", "rules"),
        "more than redirect"),
    "policy bound to no Gateway": (put("ingres", 13, "spec", "targetRefs", 0, "name"), "no Gateway edge/ingres"),
    "policy bound to a Service without a waypoint": (
        lambda d, c: c[0]["metadata"]["labels"].pop("istio.io/use-waypoint"), "uses none"),
    "selector that selects no pod": (put({"app": "ordr"}, 11, "spec", "selector", "matchLabels"), "selects no pod"),
    "L7 rule for ztunnel": (put(["/x"], 11, "spec", "rules", 0, "to", 0, "operation", "paths"), "sees no paths"),
    "JWT for ztunnel": (lambda d, c: at(d, 12, "spec").update(
        {"selector": {"matchLabels": {"app": "order"}}, "targetRefs": []}), "ztunnel reads no JWT"),
    "a wildcard method": (put(["/ordermesh.order.v1.OrderService/*"], 10, "spec", "rules", 0, "to", 0, "operation",
                                "paths"), "allows every method"),
    "every path, gRPC or not": (put(["*"], 10, "spec", "rules", 0, "to", 0, "operation", "paths"),
                                "allows every method"),
    "principal naming no ServiceAccount": (put(["cluster.local/ns/t/sa/gatewy"], 10, "spec", "rules", 0, "from", 0,
                                               "source", "principals"), "no ServiceAccount 'gatewy'"),
    "two sets of JWT issuers": (put("https://other.example/t", 13, "spec", "jwtRules", 0, "issuer"),
                                "trust different issuers"),
    "services trusting another issuer than the mesh": (
        lambda d, c: c[-1]["data"].update(ORDERMESH_JWT_ISSUER="https://other.example/t"), "the services trust"),
    "one host routed by both APIs": (lambda d, c: d.append(copy.deepcopy(
        {**d[0], "metadata": {"name": "order", "namespace": "t"}, "spec": {"hosts": ["order"], "http": [
            {"route": [{"destination": {"host": "order"}}]}]}})), "use one API per host"),
}


# A sidecar-mode policy under the name of GOOD's waypoint-bound one.
SIDECAR_POLICY = obj("security.istio.io/v1", "AuthorizationPolicy", "t", "order-l4-sidecar", {
    "selector": {"matchLabels": {"app": "order"}}, "rules": [{}]})


def edge_stream_failures() -> list[str]:
    """The edge must route each of the gateway's streams, as a stream."""
    import mesh_rules

    failures = []
    proto = 'rpc WatchOrder(WatchOrderRequest) returns (stream Order) {\n  option (google.api.http) = {get: "/v1/orders/{order_id}:watch"};\n}'
    if mesh_rules.rest_stream_paths(proto) != ["/v1/orders/x:watch"]:
        failures.append(f"streams read from a proto: {mesh_rules.rest_stream_paths(proto)}")
    cases = {
        "a stream taken by a prefix with a timeout": (["/v1/orders/x:watch"], None, "20s ends every stream"),
        "a stream the edge does not route": (["/v1/events:watch"], None, "no rule here routes it"),
        "a stream with an exact rule of its own": (["/v1/orders/x:watch"], {
            "matches": [{"path": {"type": "Exact", "value": "/v1/orders/x:watch"}}], "timeouts": {"request": "0s"},
            "backendRefs": [{"name": "gateway", "port": 8080}]}, None),
    }
    for name, (streams, extra_rule, expected) in cases.items():
        docs = copy.deepcopy(GOOD)
        if extra_rule:
            at(docs, 6, "spec", "rules").append(extra_rule)
        errors = mesh_rules.edge_stream_errors(docs, streams)
        hits = [e for e in errors if expected and expected in e]
        if expected is None and errors:
            failures.append(f"{name}: refused: {errors}")
        elif expected is not None and not hits:
            failures.append(f"{name}: not refused as expected (errors: {errors or 'none'})")
        else:
            print(f"validate-istio self-test: {name}: {hits[0][:200] if hits else 'accepted'}")
    return failures


def run(validate) -> int:
    failures = edge_stream_failures()
    if errors := validate(GOOD, CONTEXT, [SIDECAR_POLICY]):
        failures.append(f"valid objects were refused: {errors}")
    migrating = copy.deepcopy(GOOD)
    migrating[10]["metadata"]["name"] = "order-l4-sidecar"
    if not any("takes that policy away" in e for e in validate(migrating, CONTEXT, [SIDECAR_POLICY])):
        failures.append("a waypoint policy under a sidecar policy's name: not refused")
    else:
        print("validate-istio self-test: refused a waypoint policy under the name of a sidecar one")
    for name, (change, expected) in BROKEN.items():
        docs, context = copy.deepcopy(GOOD), copy.deepcopy(CONTEXT)
        change(docs, context)
        errors = validate(docs, context)
        hits = [e for e in errors if expected in e]
        if not hits:
            failures.append(f"{name}: not refused as expected (errors: {errors or 'none'})")
        else:
            print(f"validate-istio self-test: refused {name}: {hits[0][:200]}")
    for failure in failures:
        print(f"validate-istio self-test: FAIL {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"validate-istio self-test: ok ({len(BROKEN)} broken inputs refused, valid ones accepted)")
    return 0
