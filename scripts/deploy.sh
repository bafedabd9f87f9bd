#!/usr/bin/env bash
# Deploys ordermesh where a tool for it is at hand:
#   scripts/deploy.sh docker   the Compose stack (needs a Docker engine)
#   scripts/deploy.sh k8s      the dev overlay (needs kubectl and a cluster)
# Without the tool, prints exactly the commands it would run and exits 1.
set -euo pipefail

case ${1:-} in
  docker)
    commands=(
      "docker build -t ordermesh:dev ."
      "cp -n deploy/.env.example deploy/.env"
      "docker compose -f deploy/docker-compose.yaml up -d --wait"
      "docker compose -f deploy/docker-compose.yaml ps"
    )
    # `docker --version` answers without an engine; `docker info` does not.
    ready() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }
    missing="a running Docker engine"
    ;;
  k8s)
    overlay=${OVERLAY:-dev}
    commands=(
      "kubectl apply -k k8s/overlays/$overlay"
      "kubectl -n ordermesh rollout status deploy --timeout=180s"
      "kubectl -n ordermesh get pods -o wide"
    )
    ready() { command -v kubectl >/dev/null && kubectl cluster-info >/dev/null 2>&1; }
    missing="kubectl with a reachable cluster"
    ;;
  *)
    echo "usage: $0 docker|k8s" >&2
    exit 2
    ;;
esac

if ! ready; then
  echo "deploy $1: $missing is not available here. On a machine that has it, run:"
  printf '  %s\n' "${commands[@]}"
  exit 1
fi
for command in "${commands[@]}"; do
  echo "+ $command"
  eval "$command"
done
