"""What Flagger would refuse or get wrong in ordermesh's Canaries and
MetricTemplates, beyond its CRD schema (validate-istio.py checks that).

Each object alone: a Canary steps within 0-100%, names a threshold for every
gate, and takes the provider's routing fields (gatewayRefs for the Gateway
API, delegation only with Istio); a MetricTemplate uses only the variables
Flagger fills in, and each `pod=~` regex in it picks out exactly one of the
two workloads Flagger runs (`<target>-<hash>-<id>` or
`<target>-primary-<hash>-<id>`), so a gate cannot mix the canary's figures
with the primary's. With a context (the build as a whole): the target, its
autoscaler, the templates and the gatewayRefs exist; the apex Service
selects the primary as Flagger sets it; and no policy or disruption budget
selects a canaried role by `app`, the label Flagger renames on the primary
(it would leave the primary's pods outside it).
"""

from __future__ import annotations

import re

GROUP = "flagger.app"
# The variables Flagger fills into a query (pkg/metrics/observers/render.go).
VARIABLES = {"name", "namespace", "target", "service", "ingress", "interval"}
PLACEHOLDER = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")
DURATION = re.compile(r"^([0-9]+(ms|s|m|h))+$")
PROVIDERS = {"istio", "gatewayapi:v1"}
# The label Flagger renames on the primary's pods (its -selector-labels
# default is app, name, app.kubernetes.io/name: the first in the selector).
SELECTOR_LABEL = "app"


def _meta(doc) -> dict:
    return doc.get("metadata") or {}


def _ns(doc) -> str:
    return _meta(doc).get("namespace", "default")


def _where(doc) -> str:
    return f"{doc.get('kind')} {_ns(doc)}/{_meta(doc).get('name')}"


def _spec(doc) -> dict:
    return doc.get("spec") or {}


def render(query: str, model: dict) -> str:
    """The query as Flagger renders it: {{ name }} and the like, and
    {{ variables.KEY }}; anything else is an error, as Go's template is."""
    def value(match):
        word = match.group(1)
        if word in VARIABLES and word in model:
            return str(model[word])
        if word.startswith("variables.") and word[len("variables."):] in model.get("variables", {}):
            return str(model["variables"][word[len("variables."):]])
        raise KeyError(word)
    return PLACEHOLDER.sub(value, query)


def template_errors(doc) -> list[str]:
    spec = _spec(doc)
    query = spec.get("query", "")
    errors = []
    provider = spec.get("provider") or {}
    if provider.get("type") == "prometheus" and not provider.get("address"):
        errors.append("a prometheus provider needs its address")
    words = [m.group(1) for m in PLACEHOLDER.finditer(query)]
    for word in words:
        if word not in VARIABLES and not word.startswith("variables."):
            errors.append(f"{{{{ {word} }}}} is no variable Flagger fills in ({', '.join(sorted(VARIABLES))}, variables.KEY)")
    if "target" not in words:
        errors.append("the query never names {{ target }}: it cannot tell the canary from the primary")
    if errors:
        return errors
    rendered = render(query, {w: w for w in VARIABLES} | {"target": "order", "namespace": "ordermesh",
                                                         "interval": "1m", "variables": _AnyKey()})
    canary_pod, primary_pod = "order-6c9f7d8b5-x2x7z", "order-primary-5b4d9c7f8-q8w2e"
    for pattern in re.findall(r'pod=~"([^"]*)"', rendered):
        try:
            matches = [bool(re.fullmatch(pattern, pod)) for pod in (canary_pod, primary_pod)]
        except re.error as error:
            errors.append(f"pod regex {pattern!r}: {error}")
            continue
        if matches.count(True) != 1:
            errors.append(f"pod regex {pattern!r} picks {'both' if all(matches) else 'neither'} of the canary's "
                          f"({canary_pod}) and the primary's ({primary_pod}) pods")
    return errors


class _AnyKey(dict):
    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return key


def canary_errors(doc) -> list[str]:
    spec, errors = _spec(doc), []
    provider = spec.get("provider")
    service = spec.get("service") or {}
    analysis = spec.get("analysis") or {}
    if provider not in PROVIDERS:
        errors.append(f"provider {provider!r}: ordermesh's routes are for {' or '.join(sorted(PROVIDERS))}")
    if provider == "gatewayapi:v1" and not service.get("gatewayRefs"):
        errors.append("the Gateway API provider needs service.gatewayRefs (the Service or Gateway the route attaches to)")
    if provider != "istio" and (service.get("delegation") or service.get("trafficPolicy")):
        errors.append("delegation and trafficPolicy are Istio's: Flagger ignores them for this provider")
    step, most = analysis.get("stepWeight"), analysis.get("maxWeight")
    if analysis.get("iterations") is None:
        if step is None or most is None:
            errors.append("the analysis needs stepWeight and maxWeight (or iterations)")
        elif not 0 < step <= most <= 100:
            errors.append(f"weights step {step} up to {most}: need 0 < stepWeight <= maxWeight <= 100")
    for key in ("interval",):
        if analysis.get(key) and not DURATION.match(str(analysis[key])):
            errors.append(f"analysis.{key} {analysis[key]!r} is not a duration")
    if not analysis.get("threshold"):
        errors.append("the analysis needs a threshold (failed checks before rolling back)")
    for metric in analysis.get("metrics") or []:
        name = metric.get("name")
        if not metric.get("templateRef") and name not in ("request-success-rate", "request-duration"):
            errors.append(f"metric {name!r} is neither built in nor a templateRef")
        bounds = metric.get("thresholdRange") or {}
        if bounds.get("min") is None and bounds.get("max") is None:
            errors.append(f"metric {name!r} has no thresholdRange: it could never fail")
        if metric.get("interval") and not DURATION.match(str(metric["interval"])):
            errors.append(f"metric {name!r}: interval {metric['interval']!r} is not a duration")
    for hook in analysis.get("webhooks") or []:
        if not str(hook.get("url", "")).startswith(("http://", "https://")):
            errors.append(f"webhook {hook.get('name')!r}: url {hook.get('url')!r} is not http(s)")
    return errors


def object_errors(doc) -> list[str]:
    if str(doc.get("apiVersion", "")).partition("/")[0] != GROUP:
        return []
    if doc.get("kind") == "Canary":
        return canary_errors(doc)
    if doc.get("kind") == "MetricTemplate":
        return template_errors(doc)
    return []


def _values(selector) -> set[str]:
    """The values of SELECTOR_LABEL a label selector picks pods by."""
    selector = selector or {}
    found = set()
    if SELECTOR_LABEL in (selector.get("matchLabels") or {}):
        found.add(selector["matchLabels"][SELECTOR_LABEL])
    for expression in selector.get("matchExpressions") or []:
        if expression.get("key") == SELECTOR_LABEL and expression.get("operator") == "In":
            found.update(expression.get("values") or [])
    return found


def _selected(doc) -> set[str]:
    spec = _spec(doc)
    found = _values(spec.get("podSelector") if doc.get("kind") == "NetworkPolicy" else spec.get("selector"))
    for rule in (spec.get("ingress") or []) + (spec.get("egress") or []):
        for peer in (rule.get("from") or []) + (rule.get("to") or []):
            found |= _values(peer.get("podSelector"))
    return found


def build_errors(docs, context) -> list[str]:
    everything = list(docs) + list(context)
    by_kind: dict[tuple[str, str, str], dict] = {}
    for doc in everything:
        by_kind.setdefault((doc.get("kind"), _ns(doc), _meta(doc).get("name")), doc)
    canaries = [d for d in everything if d.get("kind") == "Canary" and str(d.get("apiVersion", "")).startswith(GROUP)]
    errors = []
    for canary in {id(c): c for c in canaries}.values():
        if canary not in docs:
            continue
        ns, spec = _ns(canary), _spec(canary)
        found = []
        target = (spec.get("targetRef") or {}).get("name")
        deployment = by_kind.get(("Deployment", ns, target))
        if deployment is None:
            found.append(f"targetRef: no Deployment {ns}/{target}")
        else:
            selector = (_spec(deployment).get("selector") or {}).get("matchLabels") or {}
            if selector.get(SELECTOR_LABEL) != target:
                found.append(f"Deployment {target}'s selector has no {SELECTOR_LABEL}: {target}, "
                             "the label Flagger renames to tell the primary apart")
        scaler = (spec.get("autoscalerRef") or {}).get("name")
        if scaler:
            hpa = by_kind.get(("HorizontalPodAutoscaler", ns, scaler))
            if hpa is None:
                found.append(f"autoscalerRef: no HorizontalPodAutoscaler {ns}/{scaler}")
            elif (_spec(hpa).get("scaleTargetRef") or {}).get("name") != target:
                found.append(f"autoscalerRef: {scaler} scales another Deployment than {target}")
        service = spec.get("service") or {}
        apex = by_kind.get(("Service", ns, service.get("name") or target))
        if apex is not None:
            if _spec(apex).get("selector") != {SELECTOR_LABEL: f"{target}-primary"}:
                found.append(f"Service {_meta(apex)['name']} selects {_spec(apex).get('selector')}; Flagger sets "
                             f"{{{SELECTOR_LABEL}: {target}-primary}} and `kubectl apply` would undo it")
            ports = [(p.get("name"), p.get("port")) for p in _spec(apex).get("ports") or []]
            if ports != [(service.get("portName"), service.get("port"))]:
                found.append(f"Service {_meta(apex)['name']} has ports {ports}; Flagger sets "
                             f"[({service.get('portName')!r}, {service.get('port')})]")
        for metric in (spec.get("analysis") or {}).get("metrics") or []:
            ref = metric.get("templateRef")
            if ref and ("MetricTemplate", ref.get("namespace", ns), ref.get("name")) not in by_kind:
                found.append(f"metric {metric.get('name')!r}: no MetricTemplate {ref.get('namespace', ns)}/{ref.get('name')}")
        for ref in service.get("gatewayRefs") or []:
            kind = "Service" if ref.get("kind") == "Service" else "Gateway"
            if kind == "Service" and ("Service", ref.get("namespace", ns), ref.get("name")) not in by_kind:
                found.append(f"gatewayRefs: no Service {ref.get('namespace', ns)}/{ref.get('name')}")
        errors += [f"{_where(canary)}: {e}" for e in found]
    renamed = {(_ns(c), (_spec(c).get("targetRef") or {}).get("name")) for c in canaries}
    for doc in docs:
        if doc.get("kind") not in ("AuthorizationPolicy", "RequestAuthentication", "NetworkPolicy",
                                   "PodDisruptionBudget", "PeerAuthentication", "Telemetry"):
            continue
        for value in sorted(_selected(doc)):
            if (_ns(doc), value) in renamed:
                errors.append(f"{_where(doc)}: selects {SELECTOR_LABEL}: {value}, which only the "
                              "canary's pods carry (Flagger renames it on the primary's); select "
                              "app.kubernetes.io/name")
    return errors
