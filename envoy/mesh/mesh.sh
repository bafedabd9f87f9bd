#!/usr/bin/env bash
# The local sidecar mesh: every service as its own process on loopback, each
# behind an Envoy sidecar that does mutual TLS with SPIFFE identities, RBAC,
# retries, least-request load balancing over two inventory replicas, gRPC
# health checks and outlier ejection; the Envoy edge in front of the gateway.
#
#   envoy/mesh/mesh.sh start     certificates, configs, then every process
#   envoy/mesh/mesh.sh stop      stops exactly what `start` recorded
#   envoy/mesh/mesh.sh status    which of them run
#   envoy/mesh/mesh.sh render    only writes the certificates and configs
#
# Then: curl --cacert $MESH_DIR/certs/ca.crt https://127.0.0.1:10000/v1/products (the edge). Everything lands
# in $MESH_DIR (./data/mesh): certs/, envoy/ (rendered configs), logs/, run/.
# Environment: BIN_DIR (target/release), ENVOY (.venv/bin/envoy), MESH_DIR,
# DATABASE_URL (else SQLite under $MESH_DIR/db), and every *_PORT below.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BIN_DIR=${BIN_DIR:-$root/target/release}
ENVOY=${ENVOY:-$root/.venv/bin/envoy}
MESH_DIR=${MESH_DIR:-$root/data/mesh}

# Services (plain, loopback only).
export ORDER_APP_PORT=${ORDER_APP_PORT:-50051}
export INVENTORY1_APP_PORT=${INVENTORY1_APP_PORT:-50052}
export INVENTORY2_APP_PORT=${INVENTORY2_APP_PORT:-50062}
export PAYMENT_APP_PORT=${PAYMENT_APP_PORT:-50053}
export GATEWAY_APP_PORT=${GATEWAY_APP_PORT:-8080}
# Sidecars' inbound ports (mutual TLS): what other sidecars call.
export ORDER_INBOUND_PORT=${ORDER_INBOUND_PORT:-15051}
export INVENTORY1_INBOUND_PORT=${INVENTORY1_INBOUND_PORT:-15052}
export INVENTORY2_INBOUND_PORT=${INVENTORY2_INBOUND_PORT:-15062}
export PAYMENT_INBOUND_PORT=${PAYMENT_INBOUND_PORT:-15053}
# Sidecars' outbound ports (plain, loopback): what the services call.
export GATEWAY_TO_ORDER_PORT=${GATEWAY_TO_ORDER_PORT:-16051}
export GATEWAY_TO_INVENTORY_PORT=${GATEWAY_TO_INVENTORY_PORT:-16052}
export ORDER_TO_INVENTORY_PORT=${ORDER_TO_INVENTORY_PORT:-17052}
export ORDER_TO_PAYMENT_PORT=${ORDER_TO_PAYMENT_PORT:-17053}
# The edge, and admin ports (Envoy admin, service metrics).
export EDGE_PORT=${EDGE_PORT:-10000}
export EDGE_HTTP_PORT=${EDGE_HTTP_PORT:-10080}
export EDGE_ADMIN_PORT=${EDGE_ADMIN_PORT:-9901}
export SIDECAR_ADMIN_PORT_BASE=${SIDECAR_ADMIN_PORT_BASE:-9911}
export METRICS_PORT_BASE=${METRICS_PORT_BASE:-9464}

SIDECARS=(gateway order inventory-1 inventory-2 payment)
SERVICES=(inventory-1 inventory-2 payment order gateway)

render() {
  [[ -f $MESH_DIR/certs/ca.crt ]] || "$here/certs.sh" "$MESH_DIR/certs" >/dev/null
  mkdir -p "$MESH_DIR/envoy"
  CERTS=$MESH_DIR/certs OUT=$MESH_DIR/envoy TEMPLATES=$here/templates EDGE=$root/envoy/edge.yaml \
    python3 "$here/render.py"
}

# The command line of each service.
service_args() {
  local m=$METRICS_PORT_BASE
  case $1 in
    inventory-1) echo "inventory --inventory-addr 127.0.0.1:$INVENTORY1_APP_PORT --admin-addr 127.0.0.1:$m" ;;
    inventory-2) echo "inventory --inventory-addr 127.0.0.1:$INVENTORY2_APP_PORT --admin-addr 127.0.0.1:$((m + 1))" ;;
    payment) echo "payment --payment-addr 127.0.0.1:$PAYMENT_APP_PORT --admin-addr 127.0.0.1:$((m + 2))" ;;
    order)
      echo "order --order-addr 127.0.0.1:$ORDER_APP_PORT --admin-addr 127.0.0.1:$((m + 3))" \
        "--inventory-url http://127.0.0.1:$ORDER_TO_INVENTORY_PORT --payment-url http://127.0.0.1:$ORDER_TO_PAYMENT_PORT" ;;
    gateway)
      echo "gateway --gateway-addr 127.0.0.1:$GATEWAY_APP_PORT --admin-addr 127.0.0.1:$((m + 4))" \
        "--gateway-order-url http://127.0.0.1:$GATEWAY_TO_ORDER_PORT" \
        "--gateway-inventory-url http://127.0.0.1:$GATEWAY_TO_INVENTORY_PORT" ;;
  esac
}

# The pid of NAME if its recorded process still runs the same program.
running_pid() {
  local file=$MESH_DIR/run/$1.pid pid
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2" || return 1
  echo "$pid"
}

launch() { # NAME MARKER COMMAND...
  local name=$1 marker=$2
  shift 2
  if pid=$(running_pid "$name" "$marker"); then
    echo "$name already running (pid $pid)"
    return
  fi
  nohup "$@" >>"$MESH_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$MESH_DIR/run/$name.pid"
  echo "$name started (pid $!)"
}

start() {
  [[ -x $BIN_DIR/ordermesh ]] || { echo "no $BIN_DIR/ordermesh: run \`make build\` first" >&2; exit 1; }
  [[ -x $ENVOY ]] || { echo "no Envoy at $ENVOY: run \`make setup\` first" >&2; exit 1; }
  render
  mkdir -p "$MESH_DIR/logs" "$MESH_DIR/run" "$MESH_DIR/db"
  local name
  for name in "${SIDECARS[@]}"; do
    launch "sidecar-$name" "$MESH_DIR/envoy/$name.yaml" "$ENVOY" -c "$MESH_DIR/envoy/$name.yaml" \
      --disable-hot-restart --log-level warn
  done
  launch edge "$MESH_DIR/envoy/edge.yaml" "$ENVOY" -c "$MESH_DIR/envoy/edge.yaml" --disable-hot-restart --log-level warn
  for name in "${SERVICES[@]}"; do
    # shellcheck disable=SC2046 # the flags are meant to split into words
    ORDERMESH_DATA_DIR=$MESH_DIR/db launch "$name" "ordermesh $(service_args "$name" | cut -d' ' -f1-3)" \
      "$BIN_DIR/ordermesh" $(service_args "$name")
  done
  echo "edge: https://127.0.0.1:$EDGE_PORT/ (curl --cacert $MESH_DIR/certs/ca.crt; http on $EDGE_HTTP_PORT redirects; logs in $MESH_DIR/logs)"
}

stop() {
  local name pid
  for name in "${SERVICES[@]}" edge "${SIDECARS[@]/#/sidecar-}"; do
    local marker
    case $name in
      sidecar-*) marker="$MESH_DIR/envoy/${name#sidecar-}.yaml" ;;
      edge) marker="$MESH_DIR/envoy/edge.yaml" ;;
      *) marker="ordermesh $(service_args "$name" | cut -d' ' -f1-3)" ;;
    esac
    if pid=$(running_pid "$name" "$marker"); then
      kill -TERM "$pid"
      for _ in $(seq 1 250); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "$name stopped (pid $pid)"
    fi
    rm -f "$MESH_DIR/run/$name.pid"
  done
}

status() {
  local down=0 file name
  for file in "$MESH_DIR"/run/*.pid; do
    [[ -e $file ]] || continue
    name=$(basename "$file" .pid)
    if kill -0 "$(<"$file")" 2>/dev/null; then echo "$name running"; else echo "$name stopped"; down=1; fi
  done
  return $down
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  render) render ;;
  *) echo "usage: $0 start|stop|status|render" >&2; exit 2 ;;
esac
