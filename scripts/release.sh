#!/usr/bin/env bash
# Releases IMAGE to the cluster kubectl points at, and waits for Flagger:
#   scripts/release.sh IMAGE
# 1. renders the Kubernetes overlay with IMAGE for every role and applies
#    it, and the Istio build that goes with it (kubectl apply -k);
# 2. `istioctl analyze` must report no error and no warning;
# 3. waits until every Canary has promoted IMAGE (phase Succeeded, its
#    primary running IMAGE); a Canary that fails its analysis (Flagger has
#    already rolled back) fails this, with the Canary's status and events;
# 4. the smoke test against the ingress (scripts/smoke.sh).
# Environment: OVERLAY (k8s/overlays/prod), ISTIO_BUILD (istio/base),
# NAMESPACE (ordermesh), TIMEOUT (seconds for the analyses, 1800),
# INGRESS and SMOKE_TOKEN for the smoke test; POLL (seconds between looks,
# 10) and SMOKE (the smoke test's command, scripts/smoke.sh) for
# scripts/release-selftest.sh. Used by .github/workflows/deploy.yml;
# docs/delivery.md.
set -euo pipefail

image=${1:?usage: scripts/release.sh IMAGE}
overlay=${OVERLAY:-k8s/overlays/prod}
istio_build=${ISTIO_BUILD:-istio/base}
namespace=${NAMESPACE:-ordermesh}
timeout=${TIMEOUT:-1800}
poll=${POLL:-10}
smoke=${SMOKE:-scripts/smoke.sh}
canaries=(order gateway)
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# The overlay as it is, with IMAGE for every role (a kustomization of its
# own beside the repository's, never committed).
release=$(mktemp -d "$PWD/.release.XXXXXX")
trap 'rm -rf "$release"' EXIT
cat >"$release/kustomization.yaml" <<END
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../$overlay
images:
  - name: ghcr.io/ordermesh/ordermesh
    newName: ${image%:*}
    newTag: ${image##*:}
END

step "apply $overlay with $image, and $istio_build"
kubectl apply -k "$release"
kubectl apply -k "$istio_build"

step "istioctl analyze: no errors, no warnings"
report=$(istioctl analyze -n "$namespace" --failure-threshold Warning 2>&1) || {
  echo "$report"
  echo "release: istioctl analyze is not clean" >&2
  exit 1
}
echo "$report"

phase() { kubectl -n "$namespace" get canary "$1" -o jsonpath='{.status.phase}'; }
primary_image() {
  kubectl -n "$namespace" get deployment "$1-primary" -o jsonpath='{.spec.template.spec.containers[0].image}'
}
explain() {
  kubectl -n "$namespace" describe canary "$1" || true
  kubectl -n "$namespace" get events --field-selector "involvedObject.kind=Canary,involvedObject.name=$1" \
    --sort-by=.lastTimestamp || true
}

step "Flagger's analyses: ${canaries[*]}"
deadline=$((SECONDS + timeout))
declare -A moving=()
for name in "${canaries[@]}"; do
  while :; do
    current=$(phase "$name")
    case $current in
      Progressing | Waiting | Promoting | Finalising | WaitingPromotion) moving[$name]=1 ;;
    esac
    if [[ $current == Succeeded && $(primary_image "$name") == "$image" ]]; then
      echo "canary $name: promoted $image"
      break
    fi
    # A Failed left from an earlier release counts only once this one moved.
    if [[ $current == Failed && -n ${moving[$name]:-} ]]; then
      explain "$name"
      echo "release: canary $name failed its analysis; Flagger rolled it back to $(primary_image "$name")" >&2
      exit 1
    fi
    if ((SECONDS > deadline)); then
      explain "$name"
      echo "release: canary $name not promoted within ${timeout}s (phase $current)" >&2
      exit 1
    fi
    sleep "$poll"
  done
done

step "smoke test"
read -ra smoke_command <<<"$smoke"
"${smoke_command[@]}"
