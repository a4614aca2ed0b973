#!/usr/bin/env bash
# GATEWAY_CMD for ../shared/bench/run.sh: writes a Gatehouse config from the harness contract
# (LISTEN_ADDR, UPSTREAMS) and runs the release binary on one worker thread.
#   GATEHOUSE_BIN=PATH                (default target/release/gatehouse; the profile-guided build
#                                      is target/pgo/<host triple>/release/gatehouse)
#   GATEHOUSE_ACCESS_LOG=stdout|off   (default stdout: the access log is part of the product)
#   GATEHOUSE_WORKERS=N               (default 1: the harness compares one core; 2 measures the
#                                      multi-threaded runtime's own cost on that core)
#   --print-config                    (prints the config instead of running it)
#   GATEHOUSE_BENCH_LIMIT=local|redis (optional: a rate limit on every request, high enough never to
#                                      refuse; redis needs GATEHOUSE_BENCH_REDIS_URL)
#   GATEHOUSE_BENCH_TRACING=RATIO     (optional: OpenTelemetry tracing at this sampling_ratio, the
#                                      spans posted to the first upstream, which answers any POST)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${GATEHOUSE_BIN:-$here/../target/release/gatehouse}
# In a directory of its own: the config watcher watches the file's directory, and every write
# into a busy one (/tmp during a benchmark) would wake it.
cfg=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)/gatehouse.yaml
{
  echo "access_log: ${GATEHOUSE_ACCESS_LOG:-stdout}"
  echo "listeners: [{name: bench, address: '$LISTEN_ADDR'}]"
  echo "clusters:"
  echo "  - name: backends"
  echo "    endpoints:"
  IFS=, read -ra ups <<< "$UPSTREAMS"
  for u in "${ups[@]}"; do echo "      - address: $u"; done
  case "${GATEHOUSE_BENCH_LIMIT:-}" in
    local) echo "rate_limits: [{name: bench, rate: 100000000/s, key: client_ip}]"
           echo "routes: [{name: all, cluster: backends, filters: [rate_limit: bench]}]" ;;
    redis) echo "redis: {url: '${GATEHOUSE_BENCH_REDIS_URL}', timeout: 20ms}"
           echo "rate_limits: [{name: bench, rate: 100000000/s, key: client_ip, store: redis}]"
           echo "routes: [{name: all, cluster: backends, filters: [rate_limit: bench]}]" ;;
    *) echo "routes: [{name: all, cluster: backends}]" ;;
  esac
  if [ -n "${GATEHOUSE_BENCH_TRACING:-}" ]; then
    echo "tracing: {otlp: {endpoint: 'http://${ups[0]}/v1/traces'}, sampling_ratio: $GATEHOUSE_BENCH_TRACING}"
  fi
} > "$cfg"
if [ "${1:-}" = --print-config ]; then cat "$cfg"; rm -rf "$(dirname "$cfg")"; exit 0; fi
exec "$bin" run -c "$cfg" --worker-threads "${GATEHOUSE_WORKERS:-1}"
