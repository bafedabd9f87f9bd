#!/usr/bin/env bash
# The smoke test of a release, from outside the cluster (scripts/release.sh
# runs it after the promotion; docs/delivery.md):
#   1. `orderctl health` on every role, through `kubectl port-forward` to
#      its Service (past the mesh, as docs/rollout.md section 5 does);
#   2. at the ingress: /readyz, the catalog, and one order placed with the
#      smoke-test token, which must end CONFIRMED.
# The token is a customer's whose id begins `synthetic-` (the business gate
# leaves such orders out); it comes from a Secret, never from git.
# Environment: INGRESS (https://shop.example.com), SMOKE_TOKEN, NAMESPACE
# (ordermesh), CURL_OPTS (e.g. -k for a self-signed certificate), ORDERCTL
# (the command; default: orderctl from IMAGE, the released image, with
# docker).
set -euo pipefail

namespace=${NAMESPACE:-ordermesh}
: "${INGRESS:?set INGRESS, the ingress URL}" "${SMOKE_TOKEN:?set SMOKE_TOKEN, the smoke-test token}"
if [[ -n ${ORDERCTL:-} ]]; then
  read -ra orderctl <<<"$ORDERCTL"
else
  orderctl=(docker run --rm --network host --entrypoint orderctl "${IMAGE:?set IMAGE or ORDERCTL}")
fi
read -ra curl_opts <<<"${CURL_OPTS:-}"

forwards=()
trap 'for pid in "${forwards[@]}"; do kill "$pid" 2>/dev/null || true; done' EXIT
# role, service port, local port, what to probe
for probe in \
  "order 50051 15051 ordermesh.order.v1.OrderService" \
  "inventory 50052 15052 ordermesh.inventory.v1.InventoryService" \
  "payment 50053 15053 ordermesh.payment.v1.PaymentService" \
  "gateway 8080 18080 /readyz"; do
  read -r role port local what <<<"$probe"
  kubectl -n "$namespace" port-forward "service/$role" "$local:$port" >/dev/null &
  forwards+=($!)
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$local") 2>/dev/null && break
    sleep 0.2
  done
  if [[ $what == /* ]]; then
    "${orderctl[@]}" health "http://127.0.0.1:$local$what"
  else
    "${orderctl[@]}" health "http://127.0.0.1:$local" --service "$what"
  fi
  echo "smoke: $role healthy"
done

curl -fsS "${curl_opts[@]}" "$INGRESS/readyz" >/dev/null
curl -fsS "${curl_opts[@]}" "$INGRESS/v1/products" | jq -e '.products | length > 0' >/dev/null
order=$(curl -fsS "${curl_opts[@]}" -X POST "$INGRESS/v1/orders" \
  -H "Authorization: Bearer $SMOKE_TOKEN" -H 'Content-Type: application/json' \
  -H "Idempotency-Key: smoke-$(date +%s)-$RANDOM" \
  -d '{"items":[{"productId":"sku-mug","quantity":1}],"paymentMethod":"pm_card_visa"}')
status=$(jq -r .status <<<"$order")
[[ $status == ORDER_STATUS_CONFIRMED ]] || {
  echo "smoke: the order ended $status: $order" >&2
  exit 1
}
echo "smoke: order $(jq -r .orderId <<<"$order") CONFIRMED through $INGRESS"
