#!/usr/bin/env bash
# Checks everything that ships the system without running it, offline:
#   1. the Dockerfile: hadolint, and that what it copies and runs exists;
#   2. every Kubernetes overlay: rendered by `kubectl kustomize`, validated
#      against the Kubernetes schemas (kubernetes-validate --strict), and its
#      Deployments against the flags `ordermesh` has (check-deployments.py);
#   3. every Istio object, in istio/ and rendered from each of its
#      kustomizations: validated against Istio's own CRD schemas
#      (scripts/validate-istio.py), after proving the validator refuses
#      broken objects and fails without the CRD file;
#   4. the GitHub workflows: actionlint and GitHub's workflow schema.
#
# Tools come from $ORDERMESH_TOOLS_DIR, else ./.venv/bin (`make setup`);
# kubectl from PATH. Istio's CRDs from $ISTIO_CRDS, else
# ../shared/istio/crd-all.gen.yaml beside the repository.
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

# Renders a kustomization into $work and prints the file's path.
render() {
  local out
  out="$work/$(echo "$1" | tr '/' '_').yaml"
  kubectl kustomize "$1" >"$out" || fail "kubectl kustomize $1"
  echo "$out"
}

overlays=(k8s/base k8s/overlays/*/)
for dir in "${overlays[@]}"; do
  dir=${dir%/}
  rendered=$(render "$dir")
  objects=$(grep -c '^kind:' "$rendered" || true)
  for version in $k8s_versions; do
    step "$dir: $objects objects against Kubernetes $version (kubernetes-validate --strict)"
    report="$work/report"
    if ! "$tools/kubernetes-validate" --strict --kubernetes-version "$version" "$rendered" >"$report" 2>&1; then
      grep -v '^INFO' "$report" >&2 || true
      fail "$dir does not validate against Kubernetes $version"
    fi
    # An unknown kind is only a warning to kubernetes-validate; here it is an
    # error unless it is Istio's (validated against Istio's CRDs below).
    if grep '^WARN' "$report" | grep -v 'api version [a-z.]*istio\.io/' >&2; then
      fail "$dir has objects kubernetes-validate could not check"
    fi
    echo "kubernetes-validate: $(grep -c '^INFO.*passed' "$report") objects passed"
  done
  "$python" scripts/check-deployments.py "$rendered"
  # Any Istio objects an overlay carries.
  "$python" scripts/validate-istio.py --label "$dir" "$rendered"
done

step "Istio: the validator refuses broken objects"
"$python" scripts/validate-istio.py --self-test
if ISTIO_CRDS="$work/no-such-file.yaml" "$python" scripts/validate-istio.py istio >/dev/null 2>&1; then
  fail "validate-istio.py passed without Istio's CRD file"
fi
echo "validate-istio: fails without the CRD file: ok"

step "Istio: every YAML file in istio/"
"$python" scripts/validate-istio.py --require 1 --label "istio/ (every file)" istio

mapfile -t istio_builds < <(find istio -name kustomization.yaml -printf '%h\n' | sort)
((${#istio_builds[@]} > 0)) || fail "no kustomization under istio/"
for dir in "${istio_builds[@]}"; do
  step "Istio: $dir, rendered"
  rendered=$(render "$dir")
  "$python" scripts/validate-istio.py --require 1 --label "$dir (rendered)" "$rendered"
done

step "GitHub workflows: actionlint and the workflow schema"
"$tools/actionlint" .github/workflows/*.yml
echo "actionlint: ok"
"$tools/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml

printf '\ncheck-manifests: ok (Dockerfile, %d Kubernetes builds x Kubernetes %s, %d Istio builds, workflows)\n' \
  "${#overlays[@]}" "$k8s_versions" "${#istio_builds[@]}"
