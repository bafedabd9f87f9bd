#!/usr/bin/env bash
# Installs the Debian packages the tests drive, when they are missing:
#   prometheus (the server and promtool), chromium (the headless-browser test),
#   nats-server (JetStream, for the events tests; Debian puts it in /usr/sbin),
#   valgrind (callgrind, for the instruction-count guard `make bench-guard`),
#   bubblewrap (bwrap: the manifests test runs each pod's container in a
#   sandbox, read-only root and uid 65532, as a kubelet would).
# Needs root (or sudo); a no-op when everything is there.
set -euo pipefail

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
[[ -x /usr/sbin/nats-server || -x /usr/bin/nats-server ]] || missing+=(nats-server)
command -v callgrind_control >/dev/null || missing+=(valgrind)
command -v bwrap >/dev/null || missing+=(bubblewrap)

if ((${#missing[@]} == 0)); then
  exit 0
fi
as_root=()
if [[ $(id -u) != 0 ]]; then
  as_root=(sudo)
fi
echo "install-system-tools: installing ${missing[*]}" >&2
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
