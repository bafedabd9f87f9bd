#!/usr/bin/env bash
# Proves scripts/release.sh decides as docs/delivery.md says, with kubectl
# and istioctl replaced by fakes that play a cluster's answers:
#   promoted                 -> exit 0, after the smoke test
#   the analysis fails       -> exit 1, the Canary's events in the output
#   a Failed left from the release before, then promoted -> exit 0
#   istioctl analyze warns   -> exit 1, before any waiting
#   never promoted in time   -> exit 1
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin"

cat >"$work/bin/kubectl" <<'FAKE'
#!/usr/bin/env bash
# A cluster's answers: Canary phases from $FAKE/phases-NAME (one a look),
# the primary's image from $FAKE/image-NAME-N (per look), events on describe.
set -euo pipefail
args="$*"
case $args in
  apply\ -k\ *) echo "applied ${*: -1}" ;;
  *"get canary "*)
    name=$(sed -E 's/.*get canary ([a-z]+).*/\1/' <<<"$args")
    n=$(( $(cat "$FAKE/look-$name" 2>/dev/null || echo 0) + 1 ))
    echo "$n" >"$FAKE/look-$name"
    read -ra phases <"$FAKE/phases-$name"
    ((n <= ${#phases[@]})) || n=${#phases[@]}
    printf '%s' "${phases[n-1]}" ;;
  *"get deployment "*)
    name=$(sed -E 's/.*get deployment ([a-z]+)-primary.*/\1/' <<<"$args")
    n=$(cat "$FAKE/look-$name")
    read -ra images <"$FAKE/images-$name"
    ((n <= ${#images[@]})) || n=${#images[@]}
    printf '%s' "${images[n-1]}" ;;
  *"describe canary "*) echo "Events: Warning Synced flagger Halt order.ordermesh advancement orders-failed-excess 31.2 > 2" ;;
  *"get events"*) echo "LAST SEEN  TYPE  REASON  OBJECT  MESSAGE: Canary failed! Scaling down order.ordermesh" ;;
  *) echo "fake kubectl: unexpected: $args" >&2; exit 2 ;;
esac
FAKE
cat >"$work/bin/istioctl" <<'FAKE'
#!/usr/bin/env bash
if [[ -e $FAKE/warn ]]; then echo "Warning [IST0118] (Service ordermesh/order) Port name metrics"; exit 79; fi
echo "No validation issues found when analyzing namespace: ordermesh."
FAKE
chmod +x "$work/bin/"*

new=ghcr.io/acme/shop:0.2.0 old=ghcr.io/acme/shop:0.1.0
failures=0
# scenario <name> <expected exit> <phases of order> <images of order> <expected text> [warn]
scenario() {
  local name=$1 expected=$2 phases=$3 images=$4 text=$5 fake="$work/$1"
  mkdir -p "$fake"
  echo "$phases" >"$fake/phases-order"
  echo "$images" >"$fake/images-order"
  echo "Succeeded" >"$fake/phases-gateway"
  echo "$new" >"$fake/images-gateway"
  [[ ${6:-} == warn ]] && touch "$fake/warn"
  local status=0
  FAKE=$fake PATH="$work/bin:$PATH" POLL=0 TIMEOUT=2 SMOKE="echo smoke test ran" \
    scripts/release.sh "$new" >"$fake/out" 2>&1 || status=$?
  if [[ $status != "$expected" ]] || ! grep -q "$text" "$fake/out"; then
    echo "release self-test: FAIL $name: exit $status (expected $expected), output:" >&2
    sed 's/^/  /' "$fake/out" >&2
    failures=$((failures + 1))
  else
    echo "release self-test: $name: exit $status, \"$text\""
  fi
}
scenario promoted 0 "Succeeded Progressing Progressing Promoting Succeeded" "$old $old $old $old $new" "smoke test ran"
scenario "analysis failed" 1 "Succeeded Progressing Progressing Failed" "$old $old $old $old" "orders-failed-excess 31.2 > 2"
scenario "a Failed left from before" 0 "Failed Failed Progressing Succeeded" "$old $old $old $new" "canary order: promoted"
scenario "istioctl analyze warns" 1 "Succeeded" "$new" "istioctl analyze is not clean" warn
scenario "never promoted" 1 "Progressing" "$old" "not promoted within 2s"
((failures == 0)) || exit 1
echo "release self-test: ok (5 scenarios)"
