#!/usr/bin/env python3
"""Validates Istio and Gateway API objects offline, as a cluster would.

    scripts/validate-istio.py FILE|DIR|- ...              # each object alone
    scripts/validate-istio.py --context k8s.yaml BUILD    # and the build as a whole
    scripts/validate-istio.py --streams-from proto BUILD  # and the edge routes each stream as one
    scripts/validate-istio.py --self-test                 # proves broken objects are refused

Every *.istio.io, gateway.networking.k8s.io and flagger.app object is checked against the
openAPIV3Schema of its CRD, strictly (mesh_schemas.py: unknown fields
refused, defaults filled in, every CEL rule evaluated), and against what
istiod and `istioctl analyze` would say of it (mesh_rules.py). With
--context (the rendered Kubernetes overlay the build is applied with), the
build is also checked as a whole: references resolve, policies apply to
something, ambient's ztunnel policies stay at L4, and the like; with
--migrates-from, that applying it over the other data plane's build takes no
policy away while the pods restart.

The CRDs: Istio's crd-all.gen.yaml from $ISTIO_CRDS (default:
../shared/istio/crd-all.gen.yaml beside the repository) and the Gateway
API's standard-install.yaml from $GATEWAY_API_CRDS (default:
../shared/gateway-api/standard-install.yaml), Flagger's crd.yaml from
$FLAGGER_CRDS (default: ../shared/flagger/crd.yaml; flagger_rules.py adds
what Flagger itself would refuse or get wrong). Without any of them this
fails: an unvalidated pass is no pass.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in scripts/

import yaml  # noqa: E402

import flagger_rules  # noqa: E402
import mesh_rules  # noqa: E402
import mesh_schemas  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CRDS = {
    "ISTIO_CRDS": REPO.parent / "shared" / "istio" / "crd-all.gen.yaml",
    "GATEWAY_API_CRDS": REPO.parent / "shared" / "gateway-api" / "standard-install.yaml",
    "FLAGGER_CRDS": REPO.parent / "shared" / "flagger" / "crd.yaml",
}


def is_mesh(doc) -> bool:
    group = mesh_rules.group_of(doc)
    return (group == "istio.io" or group.endswith(".istio.io") or group == mesh_rules.GATEWAY_GROUP
            or group == flagger_rules.GROUP)


def schema_errors(doc, schemas) -> list[str]:
    group, _, version = str(doc.get("apiVersion", "")).partition("/")
    schema = schemas.get((group, version, doc.get("kind")))
    if schema is None:
        return [f"no CRD defines kind {doc.get('kind')!r} in {doc.get('apiVersion')!r}"]
    if not schema.served:
        return [f"{doc['apiVersion']} is not served any more"]
    schema.defaults(doc)
    return schema.errors(doc)


def validate(docs, schemas, context=None, previous=None, streams=()) -> list[str]:
    """Errors of the mesh objects among docs; build-wide ones with a context;
    with previous, those of migrating to docs from that build; with
    streams (paths), that the edge routes each as a stream."""
    docs = [copy.deepcopy(d) for d in docs]  # defaults are filled in
    errors = []
    for doc in docs:
        if is_mesh(doc):
            found = schema_errors(doc, schemas) + mesh_rules.object_errors(doc) + flagger_rules.object_errors(doc)
            errors += [f"{mesh_rules.where(doc)}: {e}" for e in found]
    if context is not None:
        errors += mesh_rules.build_errors(docs, context)
        errors += flagger_rules.build_errors(docs, context)
    if previous is not None:
        errors += mesh_rules.migration_errors(docs, previous)
    errors += mesh_rules.edge_stream_errors(docs, streams)
    return errors


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
            found += [(name, doc) for doc in yaml.load_all(text, Loader=mesh_schemas.Loader) if isinstance(doc, dict)]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="YAML files, directories, or - for stdin")
    parser.add_argument("--self-test", action="store_true", help="check that broken objects are refused")
    parser.add_argument("--context", action="append", default=[], metavar="FILE",
                        help="the rendered Kubernetes objects the build is applied with (repeatable); "
                             "turns on the build-wide checks")
    parser.add_argument("--whole", action="store_true",
                        help="check the input as a whole build with no other context (a Kubernetes overlay)")
    parser.add_argument("--migrates-from", action="append", default=[], metavar="FILE",
                        help="a rendered build the namespace moves from to this one (repeatable)")
    parser.add_argument("--streams-from", metavar="DIR",
                        help="the .proto files under DIR name the gateway's streams (server-streaming GETs): "
                             "check that the edge routes each as a stream")
    parser.add_argument("--label", help="name the input so in the report (e.g. the kustomization)")
    parser.add_argument("--require", type=int, default=0, metavar="N",
                        help="fail unless at least N Istio or Gateway API objects were found")
    args = parser.parse_args()

    crds = []
    for variable, default in DEFAULT_CRDS.items():
        path = Path(os.environ.get(variable) or default)
        if not path.is_file():
            print(f"validate-istio: FAIL: CRD file {path} not found; set {variable} "
                  "(docs/rollout.md, \"Validating offline\")", file=sys.stderr)
            return 2
        crds.append(path)
    schemas = mesh_schemas.load_crds(*crds)
    if args.self_test:
        import mesh_selftest

        import flagger_selftest

        check = lambda docs, context=None, previous=None: validate(docs, schemas, context, previous)  # noqa: E731
        return mesh_selftest.run(check) or flagger_selftest.run(check)

    documents = read_documents(args.paths)
    context = [doc for _, doc in read_documents(args.context)] if args.context else ([] if args.whole else None)
    mesh = [doc for _, doc in documents if is_mesh(doc)]
    previous = [doc for _, doc in read_documents(args.migrates_from)] if args.migrates_from else None
    streams = []
    if args.streams_from:
        protos = sorted(Path(args.streams_from).rglob("*.proto"))
        streams = mesh_rules.rest_stream_paths("".join(p.read_text() for p in protos))
        if not streams:
            print(f"validate-istio: FAIL: no streaming GET in the protos under {args.streams_from}", file=sys.stderr)
            return 1
    errors = validate([doc for _, doc in documents], schemas, context, previous, streams)
    for error in errors:
        print(f"validate-istio: {error}", file=sys.stderr)
    sources = args.label or ", ".join(sorted({source for source, _ in documents})) or "no input"
    stats = mesh_schemas.STATS
    print(f"validate-istio: {len(mesh)} Istio/Gateway API objects in {sources} "
          f"({len(documents) - len(mesh)} others; {stats['cel_evaluated']} CEL rules evaluated, "
          f"{stats['cel_skipped']} transition rules skipped; "
          f"{'build checks against ' + str(len(context)) + ' context objects' if context is not None else 'no build checks'}): "
          f"{'FAIL' if errors else 'ok'}")
    if len(mesh) < args.require:
        print(f"validate-istio: FAIL: expected at least {args.require} Istio or Gateway API objects", file=sys.stderr)
        return 1
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
