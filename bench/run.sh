#!/usr/bin/env bash
# Runs the shared benchmark harness with Gatehouse as extra rows (access log on and off),
# results under target/bench/<timestamp>. Extra arguments are passed as the proxy list.
#   ROUNDS, DURATION, SCENARIOS: see ../shared/bench/run.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
harness=${BENCH_HARNESS:-$root/../shared/bench/run.sh}
cargo build --release --manifest-path "$root/Cargo.toml"
for pkg in nginx haproxy caddy wrk curl h2load; do
  command -v "$pkg" >/dev/null || missing=1
done
if [ -n "${missing:-}" ]; then
  apt-get install -y nginx haproxy caddy wrk curl nghttp2-client iproute2 util-linux python3
fi
export OUTDIR=${OUTDIR:-$root/target/bench/$(date +%Y%m%d-%H%M%S)}
export GATEWAY_CMD="$root/bench/gatehouse-gw.sh"
proxies=("$@")
[ ${#proxies[@]} -gt 0 ] || proxies=(direct nginx haproxy caddy gatehouse)
# The harness knows one gateway row per run; the log-off row is a second invocation into the
# same OUTDIR so that summarize.py sees both.
GATEWAY_NAME=gatehouse "$harness" "${proxies[@]}"
if [ -z "${NO_NOLOG_ROW:-}" ]; then
  GATEHOUSE_ACCESS_LOG=off GATEWAY_NAME=gatehouse-nolog "$harness" gatehouse-nolog
fi
if [ -n "${REDIS_ROW:-}" ]; then
  # A rate limit checked in Redis on every request. redis-server runs on the load core; its CPU is
  # not in the proxy's figures.
  rport=${REDIS_PORT:-19379}
  taskset -c "${LOAD_CPU:-0}" redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
  rpid=$!
  trap 'kill $rpid 2>/dev/null || true' EXIT
  for _ in $(seq 50); do redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
  GATEHOUSE_BENCH_LIMIT=local GATEWAY_NAME=gatehouse-limit "$harness" gatehouse-limit
  GATEHOUSE_BENCH_LIMIT=redis GATEHOUSE_BENCH_REDIS_URL="redis://127.0.0.1:$rport" \
    GATEWAY_NAME=gatehouse-redis "$harness" gatehouse-redis
fi
python3 "$(dirname "$harness")/summarize.py" "$OUTDIR/results.tsv" "$OUTDIR"
echo "summary: $OUTDIR/summary.md"
