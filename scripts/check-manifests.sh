#!/usr/bin/env bash
# Checks everything that ships the system without running it, offline:
#   1. the Dockerfile: hadolint, and that what it copies and runs exists;
#   2. every Kubernetes overlay: rendered by `kubectl kustomize`, validated
#      against the Kubernetes schemas (kubernetes-validate --strict), its
#      Deployments against the flags `ordermesh` has (check-deployments.py),
#      its pods against the restricted Pod Security level
#      (check-pod-security.py);
#   3. every Istio, Gateway API and Flagger object, in istio/, k8s/ and
#      rendered from each kustomization: validated against Istio's, the
#      Gateway API's and Flagger's CRD schemas, strictly, with their CEL
#      rules (flagger_rules.py: what Flagger adds), and each build as a
#      whole against the Kubernetes overlay it is applied with
#      (validate-istio.py), after proving the validators refuse broken
#      objects and fail without the CRD files;
#   4. the GitHub workflows: actionlint and GitHub's workflow schema, and
#      scripts/release.sh (the deploy workflow's) against a fake cluster.
#
# Tools come from $ORDERMESH_TOOLS_DIR, else ./.venv/bin (`make setup`);
# kubectl from PATH. Istio's CRDs from $ISTIO_CRDS, else
# ../shared/istio/crd-all.gen.yaml beside the repository; the Gateway API's
# (standard channel) from $GATEWAY_API_CRDS, else
# ../shared/gateway-api/standard-install.yaml; Flagger's from $FLAGGER_CRDS,
# else ../shared/flagger/crd.yaml.
# Environment: K8S_VERSIONS (default "1.32 1.35"), the Kubernetes versions
# to validate against.
set -euo pipefail

cd "$(dirname "$0")/.."
tools=${ORDERMESH_TOOLS_DIR:-./.venv/bin}
k8s_versions=${K8S_VERSIONS:-1.32 1.35}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }
fail() {
  echo "check-manifests: FAIL: $*" >&2
  exit 1
}

for tool in hadolint kubernetes-validate actionlint check-jsonschema python; do
  [[ -x $tools/$tool ]] || fail "$tools/$tool is missing: run \`make setup\` (or set ORDERMESH_TOOLS_DIR)"
done
command -v kubectl >/dev/null || fail "kubectl is not on PATH (it renders the kustomizations)"
python=$tools/python

step "Dockerfile: hadolint $("$tools/hadolint" --version | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1)"
"$tools/hadolint" --no-color Dockerfile
echo "hadolint: ok"

step "Dockerfile: paths it copies, binaries it builds and runs"
"$python" scripts/check-dockerfile.py Dockerfile

# Renders a kustomization into $work (once) and prints the file's path.
render() {
  local out
  out="$work/$(echo "$1" | tr '/' '_').yaml"
  [[ -s $out ]] || kubectl kustomize "$1" >"$out" || fail "kubectl kustomize $1"
  echo "$out"
}

# Kubernetes' own schemas; Istio's and the Gateway API's kinds are only a
# warning to kubernetes-validate, and are validated against their CRDs below.
kube_validate() { # <label> <rendered file>
  local version report objects
  objects=$(grep -c '^kind:' "$2" || true)
  for version in $k8s_versions; do
    step "$1: $objects objects against Kubernetes $version (kubernetes-validate --strict)"
    report="$work/report"
    if ! "$tools/kubernetes-validate" --strict --kubernetes-version "$version" "$2" >"$report" 2>&1; then
      grep -v '^INFO' "$report" >&2 || true
      fail "$1 does not validate against Kubernetes $version"
    fi
    if grep '^WARN' "$report" | grep -vE 'api version ([a-z.]*istio\.io|gateway\.networking\.k8s\.io|flagger\.app)/' >&2; then
      fail "$1 has objects kubernetes-validate could not check"
    fi
    echo "kubernetes-validate: $(grep -c '^INFO.*passed' "$report") objects passed"
  done
}

overlays=(k8s/base k8s/overlays/*/)
for dir in "${overlays[@]}"; do
  dir=${dir%/}
  rendered=$(render "$dir")
  kube_validate "$dir" "$rendered"
  "$python" scripts/check-deployments.py "$rendered"
  "$python" scripts/check-pod-security.py "$rendered"
  # Any Istio, Gateway API or Flagger objects an overlay carries, and the
  # overlay as a whole (Canaries against their targets and policies).
  "$python" scripts/validate-istio.py --whole --label "$dir" "$rendered"
done

step "Images pinned by digest: the Dockerfile's bases, prod's and ambient's containers"
"$python" scripts/check-image-pins.py Dockerfile "$(render k8s/overlays/prod)" "$(render k8s/overlays/ambient)"

step "NetworkPolicies: what each pod may send (every overlay)"
for dir in k8s/overlays/*/; do
  "$python" scripts/check-netpol.py "$(render "${dir%/}")"
done

step "The validators refuse broken objects"
"$python" scripts/check-netpol.py --self-test "$(render k8s/overlays/prod)" "$(render k8s/overlays/ambient)"
"$python" scripts/check-image-pins.py --self-test
"$python" scripts/check-pod-security.py --self-test
"$python" scripts/validate-istio.py --self-test
for variable in ISTIO_CRDS GATEWAY_API_CRDS FLAGGER_CRDS; do
  if env "$variable=$work/no-such-file.yaml" "$python" scripts/validate-istio.py istio >/dev/null 2>&1; then
    fail "validate-istio.py passed without the CRD file of $variable"
  fi
  echo "validate-istio: fails without the CRD file of $variable: ok"
done

step "Istio and Gateway API: every YAML file in istio/, each object alone"
"$python" scripts/validate-istio.py --require 1 --streams-from proto --label "istio/ (every file)" istio

# Each build is checked with the Kubernetes overlay it is applied with
# (docs/rollout.md): its Services, ServiceAccounts, pods and namespace labels.
context_of() {
  case $1 in
    istio/ambient*) echo k8s/overlays/ambient ;;
    *) echo k8s/overlays/prod ;;
  esac
}
mapfile -t istio_builds < <(find istio -name kustomization.yaml -printf '%h\n' | sort)
((${#istio_builds[@]} > 0)) || fail "no kustomization under istio/"
for dir in "${istio_builds[@]}"; do
  context=$(context_of "$dir")
  step "Istio: $dir, rendered, with $context"
  rendered=$(render "$dir")
  "$python" scripts/validate-istio.py --require 1 --context "$(render "$context")" \
    --streams-from proto --label "$dir (rendered)" "$rendered"
  # Its other objects (Namespace, ConfigMap), if any, against Kubernetes'.
  if grep '^apiVersion:' "$rendered" | grep -qvE 'istio\.io/|gateway\.networking\.k8s\.io/'; then
    kube_validate "$dir" "$rendered"
  fi
  "$python" scripts/check-pod-security.py "$rendered"
done

# Moving a namespace between data planes applies one build over the other
# while pods restart (docs/rollout.md): both must be in force meanwhile.
step "Istio: moving between sidecars and ambient mode"
"$python" scripts/validate-istio.py --migrates-from "$(render istio/sidecar)" \
  --label "istio/ambient over istio/sidecar" "$(render istio/ambient)"
"$python" scripts/validate-istio.py --migrates-from "$(render istio/ambient)" \
  --label "istio/sidecar over istio/ambient" "$(render istio/sidecar)"

step "GitHub workflows: actionlint and the workflow schema"
"$tools/actionlint" .github/workflows/*.yml
echo "actionlint: ok"
"$tools/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml
# What the deploy workflow runs decides as it should (fake kubectl, istioctl).
scripts/release-selftest.sh

printf '\ncheck-manifests: ok (Dockerfile, %d Kubernetes builds x Kubernetes %s, %d Istio builds, workflows)\n' \
  "${#overlays[@]}" "$k8s_versions" "${#istio_builds[@]}"
