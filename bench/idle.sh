#!/usr/bin/env bash
# Memory with many idle keep-alive clients: N connections each send one request, read the
# answer and then stay open; the proxy's RSS (its whole process tree) is read once all are open
# and then every SAMPLE_S seconds for HOLD_S seconds (a soak: flat means no per-connection
# growth). Rows: nginx (the shared harness's proxy config, one worker) and Gatehouse (release
# binary, one worker thread, access log on). Everything runs on 127.0.0.1 and is killed on exit.
#   CONNS (10000), HOLD_S (20; 300 for the 5-minute soak), SAMPLE_S (10), SETTLE_S (4),
#   ROWS ("nginx gatehouse"; also "refgw", the bare hyper proxy: REFGW_BIN)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${BENCH_SHARED:-$root/../shared/bench}
bin=${GATEHOUSE_BIN:-$root/target/release/gatehouse}
conns=${CONNS:-10000}
hold=${HOLD_S:-20}
sample=${SAMPLE_S:-10}
settle=${SETTLE_S:-4}
rows=${ROWS:-nginx gatehouse}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true  # each process needs CONNS + a few descriptors
run=$(mktemp -d /tmp/gatehouse-idle.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$run"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done; echo "port $1 did not open" >&2; return 1; }
# VmRSS of a process and its children, in KiB.
tree_rss() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

up=$(free_port)
"$bin" demo-backend --listen "127.0.0.1:$up" --name idle >/dev/null 2>&1 &
pids+=($!)
wait_port "$up"

cat > "$run/client.py" <<'PY'
import asyncio, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
async def one(held):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /ok HTTP/1.1\r\nHost: idle.test\r\n\r\n")
    head = await r.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await r.readexactly(length)
    held.append(w)
async def main():
    held, sem = [], asyncio.Semaphore(200)
    async def guarded():
        async with sem:
            await one(held)
    await asyncio.gather(*(guarded() for _ in range(n)))
    print("open", len(held), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
PY

printf '| row | connections | RSS before (MiB) | RSS all open (MiB) | KiB per connection | RSS at end (MiB) |\n|---|---:|---:|---:|---:|---:|\n'
for row in $rows; do
  port=$(free_port)
  case "$row" in
    nginx)
      mkdir -p "$run/tmp"
      sed -e "s|@RUNDIR@|$run|g" -e "s|@UP1@|127.0.0.1:$up|g" -e "s|@UP2@|127.0.0.1:$up|g" \
          -e "s|@LISTEN@|127.0.0.1:$port|g" -e "s|@NGINX_KEEPALIVE@|64|g" \
          -e "s|worker_connections 16384|worker_connections 40000|" \
          "$shared/conf/nginx.conf.in" > "$run/nginx.conf"
      nginx -c "$run/nginx.conf" -p "$run" >/dev/null 2>&1 &
      ;;
    gatehouse)
      cat > "$run/gw.yaml" <<EOF
listeners: [{name: idle, address: '127.0.0.1:$port', limits: {idle_timeout: 900s, max_connections: 40000}}]
clusters: [{name: c, endpoints: [{address: '127.0.0.1:$up'}]}]
routes: [{name: all, cluster: c}]
EOF
      "$bin" run -c "$run/gw.yaml" --worker-threads 1 >/dev/null 2>&1 &
      ;;
    refgw)  # the bare hyper proxy of the shared harness (build: see its README)
      LISTEN_ADDR="127.0.0.1:$port" UPSTREAMS="127.0.0.1:$up" \
        "${REFGW_BIN:-$root/target/refgw/release/refgw}" >/dev/null 2>&1 &
      ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
  pid=$!
  pids+=("$pid")
  wait_port "$port"
  before=$(tree_rss "$pid")
  # The client holds its sockets until its stdin (a FIFO) closes; it prints "open" once every
  # connection has had its answer.
  rm -f "$run/hold"; mkfifo "$run/hold"
  python3 "$run/client.py" "$port" "$conns" < "$run/hold" > "$run/client.out" &
  client=$!
  exec 3> "$run/hold"
  for _ in $(seq 600); do grep -q open "$run/client.out" 2>/dev/null && break; sleep 0.1; done
  grep -q open "$run/client.out" || { echo "$row: the client could not open $conns connections" >&2; exit 1; }
  sleep "$settle"  # idle connections settle (Gatehouse parks them after 2 s)
  all=$(tree_rss "$pid")
  waited=0
  while [ "$waited" -lt "$hold" ]; do sleep "$sample"; waited=$((waited + sample)); done
  end=$(tree_rss "$pid")
  exec 3>&-
  wait "$client" 2>/dev/null || true
  awk -v r="$row" -v c="$conns" -v b="$before" -v a="$all" -v e="$end" \
    'BEGIN { printf "| %s | %d | %.1f | %.1f | %.1f | %.1f |\n", r, c, b/1024, a/1024, (a-b)/c, e/1024 }'
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$run/client.out"
done
