#!/usr/bin/env bash
# TLS termination side by side: nginx, HAProxy and Gatehouse, each on one core with one worker,
# terminating TLS 1.3 with the same ECDSA P-256 certificate in front of two nginx backends (plain
# HTTP, pooled), loaded by wrk on the other core. Two scenarios per row:
#   keep-alive  wrk -c 64 over kept TLS connections: CPU µs per request
#   handshakes  every request on a new TLS connection (Connection: close): handshakes per second
#               and CPU µs per handshake (full handshakes; wrk does not resume sessions)
# CPU is the proxy process tree's utime+stime over the run (/proc/PID/stat).
#   ROWS ("nginx haproxy gatehouse"), SECONDS_PER_RUN (10), ROUNDS (2), GATEHOUSE_BIN
# Everything runs on 127.0.0.1 and is killed on exit. Not in CI (timing; needs a quiet machine).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${BENCH_SHARED:-$root/../shared/bench}
bin=${GATEHOUSE_BIN:-$root/target/release/gatehouse}
rows=${ROWS:-nginx haproxy gatehouse}
secs=${SECONDS_PER_RUN:-10}
rounds=${ROUNDS:-2}
run=$(mktemp -d /tmp/gatehouse-tls.XXXXXX)
mkdir -p "$run/tmp" "$run/gw"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$run"; }
trap cleanup EXIT

. "$root/bench/lib.sh"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$run/key.pem" -out "$run/cert.pem" -subj /CN=bench.test \
  -addext subjectAltName=DNS:bench.test 2>/dev/null
cat "$run/cert.pem" "$run/key.pem" > "$run/both.pem"

ups=()
for _ in 1 2; do
  port=$(free_port)
  sed -e "s|@RUNDIR@|$run|g" -e "s|@BENCHDIR@|$shared|g" -e "s|@PORT@|$port|g" \
    "$shared/conf/backend-nginx.conf.in" > "$run/backend-$port.conf"
  taskset -c 0 nginx -p "$run" -e "$run/backend-$port.error.log" -c "$run/backend-$port.conf" >/dev/null 2>&1 &
  pids+=($!)
  ups+=("127.0.0.1:$port")
done
sleep 0.5

start_row() { # row port -> pid of the proxy
  local row=$1 port=$2
  case "$row" in
    nginx)
      sed -e "s|@RUNDIR@|$run|g" -e "s|@UP1@|${ups[0]}|g" -e "s|@UP2@|${ups[1]}|g" \
          -e "s|@LISTEN@|127.0.0.1:$port ssl|g" -e "s|@NGINX_KEEPALIVE@|1024|g" \
          -e "s|location / {|ssl_certificate $run/cert.pem; ssl_certificate_key $run/key.pem; ssl_protocols TLSv1.3;\n        location / {|" \
          "$shared/conf/nginx.conf.in" > "$run/nginx.conf"
      taskset -c 1 nginx -p "$run" -c "$run/nginx.conf" >/dev/null 2>&1 &
      ;;
    haproxy)
      sed -e "s|@UP1@|${ups[0]}|g" -e "s|@UP2@|${ups[1]}|g" \
          -e "s|bind @LISTEN@|bind 127.0.0.1:$port ssl crt $run/both.pem ssl-min-ver TLSv1.3|" \
          "$shared/conf/haproxy.cfg.in" > "$run/haproxy.cfg"
      taskset -c 1 haproxy -f "$run/haproxy.cfg" >/dev/null 2>&1 &
      ;;
    gatehouse)
      cat > "$run/gw/gw.yaml" <<EOF
listeners:
  - name: tls
    address: 127.0.0.1:$port
    limits: {max_connections: 40000}
    tls: {certificates: [{cert: $run/cert.pem, key: $run/key.pem}], min_version: "1.3"}
clusters: [{name: c, endpoints: [{address: '${ups[0]}'}, {address: '${ups[1]}'}]}]
routes: [{name: all, cluster: c}]
EOF
      taskset -c 1 "$bin" run -c "$run/gw/gw.yaml" --worker-threads 1 >/dev/null 2>&1 &
      ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  echo $!
}

measure() { # pid url extra-wrk-args... -> "requests cpu_us_per_request rps"
  local pid=$1 url=$2; shift 2
  local before after out reqs
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 0 wrk -t1 -d"${secs}s" "$@" "$url" 2>&1)
  after=$(cpu_ticks "$pid")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  awk -v r="$reqs" -v t=$((after - before)) -v hz="$hz" -v s="$secs" \
    'BEGIN { if (r > 0) printf "%d %.1f %.0f\n", r, t * 1e6 / hz / r, r / s; else print "0 NA NA" }'
}

printf '| row | round | keep-alive c64: req/s | CPU µs/req | new connection per request: handshakes/s | CPU µs/handshake |\n|---|---:|---:|---:|---:|---:|\n'
for round in $(seq "$rounds"); do
  for row in $rows; do
    port=$(free_port)
    pid=$(start_row "$row" "$port")
    pids+=("$pid")
    url="https://127.0.0.1:$port/ok"
    wait_url "$url"
    taskset -c 0 wrk -t1 -c64 -d2s "$url" >/dev/null 2>&1  # warm-up
    read -r _ ka_us ka_rps < <(measure "$pid" "$url" -c64)
    read -r _ hs_us hs_rps < <(measure "$pid" "$url" -c16 -H "Connection: close")
    printf '| %s | %d | %s | %s | %s | %s |\n' "$row" "$round" "$ka_rps" "$ka_us" "$hs_rps" "$hs_us"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
done
