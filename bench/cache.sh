#!/usr/bin/env bash
# Cache hits side by side: nginx with proxy_cache and Gatehouse with a memory cache filter, each
# on one core with one worker, in front of two nginx backends (the shared harness's backend
# config, plus `Cache-Control: max-age=3600` on every response), loaded by wrk on the other core.
# After a warm-up every request is a hit, so the rows measure what a hit costs. The same proxies
# without a cache are measured in the same rounds as the control.
#   ROWS ("nginx nginx-cache gatehouse gatehouse-cache"), PATHS ("/ok /16k"), CONNS (64),
#   SECONDS_PER_RUN (10), ROUNDS (2), GATEHOUSE_BIN
# CPU is the proxy process tree's utime+stime over the run (/proc/PID/stat). Everything runs on
# 127.0.0.1 and is killed on exit. Not in CI (timing; needs a quiet machine).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${BENCH_SHARED:-$root/../shared/bench}
bin=${GATEHOUSE_BIN:-$root/target/release/gatehouse}
rows=${ROWS:-nginx nginx-cache gatehouse gatehouse-cache}
paths=${PATHS:-/ok /16k}
conns=${CONNS:-64}
secs=${SECONDS_PER_RUN:-10}
rounds=${ROUNDS:-2}
run=$(mktemp -d /tmp/gatehouse-cache.XXXXXX)
# nginx's cache files in tmpfs, so that a hit costs no disk (the page cache would hold them
# anyway; this takes the question off the table).
shm=$(mktemp -d /dev/shm/gatehouse-cache.XXXXXX)
mkdir -p "$run/tmp" "$run/gw"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$run" "$shm"; }
trap cleanup EXIT

. "$root/bench/lib.sh"

ups=()
for _ in 1 2; do
  port=$(free_port)
  sed -e "s|@RUNDIR@|$run|g" -e "s|@BENCHDIR@|$shared|g" -e "s|@PORT@|$port|g" \
      -e 's|add_header X-Backend \(.*\) always;|add_header X-Backend \1 always; add_header Cache-Control "max-age=3600" always;|' \
    "$shared/conf/backend-nginx.conf.in" > "$run/backend-$port.conf"
  taskset -c 0 nginx -p "$run" -e "$run/backend-$port.error.log" -c "$run/backend-$port.conf" >/dev/null 2>&1 &
  pids+=($!)
  ups+=("127.0.0.1:$port")
done
sleep 0.5

start_row() { # row port -> pid of the proxy
  local row=$1 port=$2
  case "$row" in
    nginx|nginx-cache)
      local cache=""
      if [ "$row" = nginx-cache ]; then
        # A hit is the keys-zone lookup plus the entry file's open, read and close.
        cache="proxy_cache_path $shm levels=1:2 keys_zone=c:16m max_size=256m inactive=1h use_temp_path=off;"
      fi
      sed -e "s|@RUNDIR@|$run|g" -e "s|@UP1@|${ups[0]}|g" -e "s|@UP2@|${ups[1]}|g" \
          -e "s|@LISTEN@|127.0.0.1:$port|g" -e "s|@NGINX_KEEPALIVE@|1024|g" \
          -e "s|    upstream backends {|    $cache\n    upstream backends {|" \
          "$shared/conf/nginx.conf.in" > "$run/nginx.conf"
      if [ "$row" = nginx-cache ]; then
        sed -i "s|            proxy_pass http://backends;|            proxy_pass http://backends; proxy_cache c; add_header X-Cache \$upstream_cache_status;|" "$run/nginx.conf"
      fi
      taskset -c 1 nginx -p "$run" -c "$run/nginx.conf" >/dev/null 2>&1 &
      ;;
    gatehouse|gatehouse-cache)
      local filters=""
      [ "$row" = gatehouse-cache ] && filters=", filters: [cache: {}]"
      cat > "$run/gw/gw.yaml" <<EOF
listeners: [{name: bench, address: '127.0.0.1:$port', limits: {max_connections: 40000}}]
clusters: [{name: c, endpoints: [{address: '${ups[0]}'}, {address: '${ups[1]}'}]}]
routes: [{name: all, cluster: c$filters}]
EOF
      taskset -c 1 "$bin" run -c "$run/gw/gw.yaml" --worker-threads 1 >/dev/null 2>&1 &
      ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  echo $!
}

measure() { # pid url -> "cpu_us_per_request rps"
  local pid=$1 url=$2
  local before after out reqs
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" "$url" 2>&1)
  after=$(cpu_ticks "$pid")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v r="$reqs" -v t=$((after - before)) -v hz="$hz" -v s="$secs" \
    'BEGIN { if (r > 0) printf "%.1f %.0f\n", t * 1e6 / hz / r, r / s; else print "NA NA" }'
}

printf '| row | round | path | c%s req/s | CPU µs/req | X-Cache |\n|---|---:|---|---:|---:|---|\n' "$conns"
for round in $(seq "$rounds"); do
  for row in $rows; do
    port=$(free_port)
    pid=$(start_row "$row" "$port")
    pids+=("$pid")
    wait_url "http://127.0.0.1:$port/ok"
    for path in $paths; do
      url="http://127.0.0.1:$port$path"
      taskset -c 0 wrk -t1 -c"$conns" -d2s "$url" >/dev/null 2>&1  # warm-up (fills the cache)
      status=$(curl -s -o /dev/null -D - "$url" | awk 'tolower($1) == "x-cache:" {print $2}' | tr -d '\r')
      read -r us rps < <(measure "$pid" "$url")
      printf '| %s | %d | %s | %s | %s | %s |\n' "$row" "$round" "$path" "$rps" "$us" "${status:--}"
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
done
