#!/usr/bin/env bash
# A scripted tour through orderctl against a running ordermesh (`make run` or
# `make dev-run`): browse, order, a decline, a cancel, watch.
# Environment: ORDERCTL (target/release/orderctl), ORDERCTL_ORDER_URL,
# ORDERCTL_INVENTORY_URL and ORDERCTL_GATEWAY_URL (orderctl's defaults:
# 127.0.0.1:50051 / :50052 / :8080). It signs in with a scratch config
# directory (ORDERCTL_CONFIG_DIR), leaving your own `orderctl login` alone.
set -euo pipefail

ORDERCTL=${ORDERCTL:-target/release/orderctl}
customer=demo-$(date +%s)
if [[ -z ${ORDERCTL_CONFIG_DIR:-} ]]; then
  ORDERCTL_CONFIG_DIR=$(mktemp -d)
  trap 'rm -rf "$ORDERCTL_CONFIG_DIR"' EXIT
fi
export ORDERCTL_CONFIG_DIR

step() { printf '\n== %s\n' "$*"; }
run() { printf '$ orderctl %s\n' "$*" >&2; "$ORDERCTL" "$@"; }

step "Sign in as $customer (the development issuer's token)"
run login "$customer"

step "Browse the catalog"
run products

step "Place an order for two mugs and a bag of beans"
created=$(run order create --customer "$customer" --item sku-mug:2 --item sku-espresso:1 \
  --payment pm_card_visa --idempotency-key "$customer-1")
echo "$created"
# The first line is `order <ORDER_ID> <STATUS>`.
order_id=$(awk 'NR == 1 { print $2 }' <<<"$created")
grep -q CONFIRMED <<<"$created" || { echo "expected CONFIRMED" >&2; exit 1; }

step "Retry it with the same idempotency key: the same order comes back"
run order create --customer "$customer" --item sku-mug:2 --item sku-espresso:1 \
  --payment pm_card_visa --idempotency-key "$customer-1" | head -1

step "A card that is declined: the order fails and the stock comes back"
declined=$(run order create --customer "$customer" --item sku-mug:1 --payment pm_card_chargeDeclined || true)
echo "$declined"
grep -q FAILED <<<"$declined" || { echo "expected FAILED" >&2; exit 1; }

step "Watch the confirmed order (it is final, so the stream ends at once)"
run order watch "$order_id"

step "Cancel it: refund and restock"
cancelled=$(run order cancel "$order_id")
echo "$cancelled"
grep -q CANCELLED <<<"$cancelled" || { echo "expected CANCELLED" >&2; exit 1; }

step "The customer's orders, newest first"
run order list --customer "$customer"

printf '\ndemo complete: customer %s\n' "$customer"
