"""validate-istio.py --self-test, Flagger's part: a valid Canary with its
templates is accepted, and each broken variant is refused with the error
expected (the CRD schema, and every rule of flagger_rules.py)."""

from __future__ import annotations

import copy
import sys

F = "flagger.app/v1beta1"
POD = '{namespace="{{ namespace }}", pod=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"}'


def obj(api, kind, name, spec, namespace="t"):
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}


GOOD = [
    # 0: the gate.
    obj(F, "MetricTemplate", "rate", {
        "provider": {"type": "prometheus", "address": "http://prometheus.monitoring:9090"},
        "query": f"sum(rate(requests_total{POD}[{{{{ interval }}}}]))"}),
    # 1: the canary.
    obj(F, "Canary", "order", {
        "provider": "istio",
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "order"},
        "autoscalerRef": {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "order"},
        "service": {"name": "order", "port": 50051, "portName": "grpc", "delegation": True},
        "analysis": {"interval": "1m", "threshold": 3, "stepWeight": 10, "maxWeight": 50, "metrics": [
            {"name": "rate", "templateRef": {"name": "rate"}, "thresholdRange": {"min": 99}, "interval": "1m"}],
            "webhooks": [{"name": "smoke", "type": "pre-rollout", "url": "http://loadtester.t/"}]}}),
    # 2: a policy on both tracks.
    obj("networking.k8s.io/v1", "NetworkPolicy", "order-in", {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "order"}}}),
]
CONTEXT = [
    obj("apps/v1", "Deployment", "order", {"selector": {"matchLabels": {"app": "order"}},
                                           "template": {"metadata": {"labels": {"app": "order"}}}}),
    obj("autoscaling/v2", "HorizontalPodAutoscaler", "order", {"scaleTargetRef": {"name": "order"}}),
    obj("v1", "Service", "order", {"selector": {"app": "order-primary"}, "ports": [{"name": "grpc", "port": 50051}]}),
]


def put(value, *path):
    def change(docs, context):
        node = docs
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


BROKEN = {
    "an unknown field": (put(1, 1, "spec", "analysis", "stepWeights"), "stepWeights"),
    "a provider outside the CRD's": (put("istio-ambient", 1, "spec", "provider"), "istio-ambient"),
    "a provider ordermesh has no routes for": (put("linkerd", 1, "spec", "provider"), "ordermesh's routes"),
    "the Gateway API without gatewayRefs": (put("gatewayapi:v1", 1, "spec", "provider"), "needs service.gatewayRefs"),
    "a step above the maximum": (put(60, 1, "spec", "analysis", "stepWeight"), "need 0 < stepWeight"),
    "a gate without a threshold": (put({}, 1, "spec", "analysis", "metrics", 0, "thresholdRange"), "could never fail"),
    "no rollback threshold": (put(0, 1, "spec", "analysis", "threshold"), "needs a threshold"),
    "a webhook that is no URL": (put("loadtester", 1, "spec", "analysis", "webhooks", 0, "url"), "is not http(s)"),
    "a template that does not exist": (put({"name": "nope"}, 1, "spec", "analysis", "metrics", 0, "templateRef"),
                                       "no MetricTemplate t/nope"),
    "a target that does not exist": (put("ordr", 1, "spec", "targetRef", "name"), "no Deployment t/ordr"),
    "an autoscaler of another Deployment": (lambda d, c: c[1]["spec"]["scaleTargetRef"].update(name="x"),
                                            "scales another Deployment"),
    "an apex Service on the canary's pods": (lambda d, c: c[2]["spec"].update(selector={"app": "order"}),
                                             "kubectl apply` would undo it"),
    "an apex Service with other ports": (lambda d, c: c[2]["spec"]["ports"].append({"name": "m", "port": 9464}),
                                         "Flagger sets"),
    "a policy on the canary's pods only": (put({"matchLabels": {"app": "order"}}, 2, "spec", "podSelector"),
                                           "only the canary's pods"),
    "a policy on the canary's pods by expression": (
        put({"matchExpressions": [{"key": "app", "operator": "In", "values": ["order", "x"]}]}, 2, "spec", "podSelector"),
        "only the canary's pods"),
    "a policy admitting the canary's pods only": (
        put([{"from": [{"podSelector": {"matchLabels": {"app": "order"}}}]}], 2, "spec", "ingress"),
        "only the canary's pods"),
    "a variable Flagger does not fill": (put("sum(x{pod=~\"{{ target }}-.+\", w=\"{{ workload }}\"})", 0, "spec", "query"),
                                         "{{ workload }} is no variable"),
    "a query that ignores the target": (put("sum(rate(requests_total[1m]))", 0, "spec", "query"), "never names {{ target }}"),
    "a pod regex matching both tracks": (put('sum(x{pod=~"{{ target }}-.*"})', 0, "spec", "query"), "picks both"),
    "a prometheus without address": (lambda d, c: d[0]["spec"]["provider"].pop("address"), "needs its address"),
}


def run(validate) -> int:
    failures = []
    if errors := validate(GOOD, CONTEXT):
        failures.append(f"valid objects were refused: {errors}")
    for name, (change, expected) in BROKEN.items():
        docs, context = copy.deepcopy(GOOD), copy.deepcopy(CONTEXT)
        change(docs, context)
        errors = validate(docs, context)
        hits = [e for e in errors if expected in e]
        if not hits:
            failures.append(f"{name}: not refused as expected (errors: {errors or 'none'})")
        else:
            print(f"validate-istio self-test (Flagger): refused {name}: {hits[0][:200]}")
    for failure in failures:
        print(f"validate-istio self-test (Flagger): FAIL {failure}", file=sys.stderr)
    if failures:
        return 1
    print(f"validate-istio self-test (Flagger): ok ({len(BROKEN)} broken inputs refused, valid ones accepted)")
    return 0
