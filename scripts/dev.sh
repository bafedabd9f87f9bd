#!/usr/bin/env bash
# Runs each ordermesh role as its own process, ports as in the mesh:
#   scripts/dev.sh start    start order, inventory, payment and gateway
#   scripts/dev.sh stop     stop exactly the processes `start` recorded
#   scripts/dev.sh status   which of them are running
# Logs go to $DATA_DIR/logs/ROLE.log, pid files to $DATA_DIR/run/ROLE.pid.
# Environment: BIN_DIR (target/release), DATA_DIR (./data), and the ports
# ORDER_PORT 50051, INVENTORY_PORT 50052, PAYMENT_PORT 50053, GATEWAY_PORT
# 8080, ADMIN_PORT_BASE 9464 (order, inventory, payment, gateway: +0..+3).
set -euo pipefail

BIN_DIR=${BIN_DIR:-target/release}
DATA_DIR=${DATA_DIR:-./data}
ORDER_PORT=${ORDER_PORT:-50051}
INVENTORY_PORT=${INVENTORY_PORT:-50052}
PAYMENT_PORT=${PAYMENT_PORT:-50053}
GATEWAY_PORT=${GATEWAY_PORT:-8080}
ADMIN_PORT_BASE=${ADMIN_PORT_BASE:-9464}
ROLES=(inventory payment order gateway)

logs=$DATA_DIR/logs
run=$DATA_DIR/run

args_for() {
  local local_host=127.0.0.1
  case $1 in
    order)
      echo "order --order-addr $local_host:$ORDER_PORT --admin-addr $local_host:$ADMIN_PORT_BASE" \
        "--inventory-url http://$local_host:$INVENTORY_PORT --payment-url http://$local_host:$PAYMENT_PORT" ;;
    inventory)
      echo "inventory --inventory-addr $local_host:$INVENTORY_PORT --admin-addr $local_host:$((ADMIN_PORT_BASE + 1))" ;;
    payment)
      echo "payment --payment-addr $local_host:$PAYMENT_PORT --admin-addr $local_host:$((ADMIN_PORT_BASE + 2))" ;;
    gateway)
      echo "gateway --gateway-addr $local_host:$GATEWAY_PORT --admin-addr $local_host:$((ADMIN_PORT_BASE + 3))" \
        "--gateway-order-url http://$local_host:$ORDER_PORT --gateway-inventory-url http://$local_host:$INVENTORY_PORT" ;;
  esac
}

# The pid in ROLE's pid file, if that process is still ours and alive.
running_pid() {
  local file=$run/$1.pid pid
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  # Same pid, same program: a recycled pid is not ours to stop.
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "ordermesh $1 " || return 1
  echo "$pid"
}

start() {
  [[ -x $BIN_DIR/ordermesh ]] || { echo "no $BIN_DIR/ordermesh: run \`make build\` first" >&2; exit 1; }
  mkdir -p "$logs" "$run"
  for role in "${ROLES[@]}"; do
    if pid=$(running_pid "$role"); then
      echo "$role already running (pid $pid)"
      continue
    fi
    # shellcheck disable=SC2046 # the flags are meant to split into words
    ORDERMESH_DATA_DIR=$DATA_DIR nohup "$BIN_DIR/ordermesh" $(args_for "$role") \
      >>"$logs/$role.log" 2>&1 </dev/null &
    echo $! >"$run/$role.pid"
    echo "$role started (pid $!), log $logs/$role.log"
  done
  echo "gateway: http://127.0.0.1:$GATEWAY_PORT/  metrics: 127.0.0.1:$ADMIN_PORT_BASE..$((ADMIN_PORT_BASE + 3))"
}

stop() {
  local role pid
  for role in "${ROLES[@]}"; do
    if pid=$(running_pid "$role"); then
      kill -TERM "$pid"
      # Graceful: the role drains and exits 0; give it the shutdown grace.
      for _ in $(seq 1 250); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "$pid" 2>/dev/null; then
        echo "$role (pid $pid) did not stop in 25s; killing it" >&2
        kill -KILL "$pid"
      fi
      echo "$role stopped (pid $pid)"
    fi
    rm -f "$run/$role.pid"
  done
}

status() {
  local role pid down=0
  for role in "${ROLES[@]}"; do
    if pid=$(running_pid "$role"); then
      echo "$role running (pid $pid)"
    else
      echo "$role stopped"
      down=1
    fi
  done
  return $down
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
