#!/usr/bin/env bash
# User-space instructions per proxied request for one or more Gatehouse binaries, counted by
# valgrind (cachegrind, no cache simulation): a count, not a time, so changes of a few percent
# show through this machine's timing noise. The gateway runs twice per binary, for N and 3N
# requests (h2load, keep-alive, CONNS connections); the slope between the two is the cost of
# one request with start-up and shutdown taken out.
#   bench/instructions.sh [NAME=BINARY ...]     (default: target/release/gatehouse)
#   bench/instructions.sh refgw=target/refgw/release/refgw gatehouse=target/release/gatehouse
#   N=2000 CONNS=16 PATH_=/ok
# Backends: two nginx from ../shared/bench/conf (the harness's own).
set -euo pipefail
[ -n "${TRACE:-}" ] && set -x
here=$(cd "$(dirname "$0")" && pwd)
bench=$(cd "$here/../../shared/bench" && pwd)
n=${N:-2000}; conns=${CONNS:-16}; path=${PATH_:-/ok}
run=$(mktemp -d /tmp/gh-instr.XXXXXX); mkdir -p "$run/tmp"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
for port in 19201 19202; do
  sed -e "s|@RUNDIR@|$run|g" -e "s|@BENCHDIR@|$bench|g" -e "s|@PORT@|$port|g" \
    "$bench/conf/backend-nginx.conf.in" > "$run/be-$port.conf"
  nginx -c "$run/be-$port.conf" -p "$run" >/dev/null 2>&1 & pids+=($!)
done
count() { # binary requests -> total user instructions of the gateway's whole life
  local bin=$1 reqs=$2 out="$run/cg.$RANDOM"
  local vg="valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=$out"
  export LISTEN_ADDR=127.0.0.1:18200 UPSTREAMS=127.0.0.1:19201,127.0.0.1:19202
  case $bin in
    # The bare hyper row of ../shared/bench (reads LISTEN_ADDR and UPSTREAMS itself).
    *refgw) $vg "$bin" > /dev/null 2>&1 & ;;
    *) $vg "$bin" run -c <(bash "$here/gatehouse-gw.sh" --print-config) --worker-threads 1 \
         > /dev/null 2>&1 & ;;
  esac
  local gw=$!
  for _ in $(seq 300); do curl -fs -o /dev/null "http://127.0.0.1:18200$path" && break; sleep 0.1; done
  h2load --h1 -n "$reqs" -c "$conns" "http://127.0.0.1:18200$path" | grep -q "0 failed, 0 errored" \
    || echo "warning: some requests failed" >&2
  kill -TERM "$gw"; wait "$gw" || true
  awk '/^summary:/ {print $2}' "$out"
}
[ $# -gt 0 ] || set -- "gatehouse=$here/../target/release/gatehouse"
printf '%-12s %14s\n' binary "instr/request"
for nb in "$@"; do
  name=${nb%%=*}; bin=${nb#*=}
  a=$(count "$bin" "$n"); b=$(count "$bin" $((3 * n)))
  printf '%-12s %14d\n' "$name" $(( (b - a) / (2 * n) ))
done
