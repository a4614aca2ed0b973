#!/usr/bin/env bash
# GATEWAY_CMD for ../shared/bench/run.sh: writes a Gatehouse config from the harness contract
# (LISTEN_ADDR, UPSTREAMS) and runs the release binary on one worker thread.
#   GATEHOUSE_ACCESS_LOG=stdout|off   (default stdout: the access log is part of the product)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${GATEHOUSE_BIN:-$here/../target/release/gatehouse}
cfg=$(mktemp /tmp/gatehouse-bench.XXXXXX)
{
  echo "access_log: ${GATEHOUSE_ACCESS_LOG:-stdout}"
  echo "listeners: [{name: bench, address: '$LISTEN_ADDR'}]"
  echo "clusters:"
  echo "  - name: backends"
  echo "    endpoints:"
  IFS=, read -ra ups <<< "$UPSTREAMS"
  for u in "${ups[@]}"; do echo "      - address: $u"; done
  echo "routes: [{name: all, cluster: backends}]"
} > "$cfg"
exec "$bin" run -c "$cfg" --worker-threads 1
