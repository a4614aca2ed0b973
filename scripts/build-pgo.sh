#!/usr/bin/env bash
# A profile-guided release build (docs/design/performance.md#profile-guided-build):
#   1. builds an instrumented gateway (-Cprofile-generate) in target/pgo-gen;
#   2. trains it: the bench's config over HTTP/1.1 (/ok at 1, 64 and 256 connections, /16k),
#      HTTP/2 (h2c), and both over TLS, on one worker thread and on the default runtime, against
#      two nginx backends (the harness's own when it is checked out beside this repository),
#      then the embedded demo (retries, breakers, the cache, local replies);
#   3. merges the profile with the llvm-profdata of rustc's own LLVM version;
#   4. builds the release binary with -Cprofile-use into target/pgo.
# Prints the binary's path. It leaves target/pgo-gen (the instrumented build), target/pgo-data
# and target/pgo-<hash>.profdata (the profile) beside target/pgo: ~3.5 GB in all. What it needs
# and lacks (llvm-N for rustc's LLVM N, nginx, h2load, curl, python3, openssl) it installs from
# Debian's packages, which takes root.
#   scripts/build-pgo.sh                   (the whole thing, ~15 min on 2 cores)
#   SKIP_GEN=1 scripts/build-pgo.sh        (reuse target/pgo-gen's binary)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd); here=$root/bench
bench=$(cd "$root/../shared/bench" 2>/dev/null && pwd || true)
triple=$(rustc -vV | awk '/^host:/ {print $2}')
llvm=$(rustc -vV | awk '/^LLVM version:/ {split($3, v, "."); print v[1]}')

# What is missing, by Debian package.
need=()
command -v "llvm-profdata-$llvm" >/dev/null || need+=("llvm-$llvm")
command -v nginx >/dev/null || need+=(nginx-light)
command -v h2load >/dev/null || need+=(nghttp2-client)
for t in curl python3 openssl; do command -v "$t" >/dev/null || need+=("$t"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (rustc uses LLVM $llvm)" >&2
  [ "$(id -u)" = 0 ] || { echo "installing packages needs root" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
  # The package starts and enables a system nginx on port 80; the training runs its own.
  if [[ " ${need[*]} " == *" nginx-light "* ]]; then systemctl disable --now nginx 2>/dev/null || true; fi
fi
profdata=$(command -v "llvm-profdata-$llvm")
source "$here/lib.sh"

data=$root/target/pgo-data
gen=$root/target/pgo-gen/$triple/release/gatehouse
if [ -z "${SKIP_GEN:-}" ]; then
  RUSTFLAGS="-Cprofile-generate=$data" cargo build --release --bin gatehouse \
    --manifest-path "$root/Cargo.toml" --target "$triple" --target-dir "$root/target/pgo-gen" >&2
fi
rm -rf "$data"; mkdir -p "$data"

run=$(mktemp -d /tmp/gh-pgo.XXXXXX); mkdir -p "$run/tmp"
# nginx's workers run as nobody when the script runs as root: they may pass through the run
# directory and read www/, nothing else (cfg/ holds the training's private key).
chmod 711 "$run"; mkdir -m 700 "$run/cfg"; mkdir -m 755 "$run/www"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT
stop() { # SIGTERM (the profile is written at exit), and forget the pid once reaped
  kill -TERM "$1"; wait "$1" || true
  local p kept=(); for p in "${pids[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done; pids=("${kept[@]}")
}
# h2load exits 0 whatever the answers were: check them. `load WANT ARGS...`: WANT is `ok`
# (every request a 2xx) or `answered` (every request got an answer, of any status).
load() {
  local want=$1 out; shift
  out=$(h2load "$@")
  grep -E '^requests:' <<< "$out" >&2
  local total finished ok
  read -r total finished ok < <(awk '/^requests:/ {print $2, $6, $8}' <<< "$out")
  if [ "$finished" != "$total" ] || { [ "$want" = ok ] && [ "$ok" != "$total" ]; }; then
    echo "training run failed: h2load $*" >&2; echo "$out" >&2
    local f; for f in "$run"/be-*.err "$run"/gw.log "$run"/demo.log; do
      [ -s "$f" ] && { echo "--- the end of $f:" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
  fi
}

be1=$(free_port); be2=$(free_port); backends=()
head -c 16384 /dev/zero | tr '\0' x > "$run/www/16k.txt"; chmod 644 "$run/www/16k.txt"
for port in "$be1" "$be2"; do
  if [ -n "$bench" ]; then
    sed -e "s|@RUNDIR@|$run|g" -e "s|@BENCHDIR@|$bench|g" -e "s|@PORT@|$port|g" \
      "$bench/conf/backend-nginx.conf.in" > "$run/be-$port.conf"
  else # outside the workplace: the same two answers
    cat > "$run/be-$port.conf" <<EOF
daemon off; worker_processes 1; pid $run/be-$port.pid; error_log $run/be-$port.err;
events {}
http {
  access_log off; keepalive_requests 10000000; keepalive_timeout 300s;
  client_body_temp_path $run/tmp;
  server {
    listen 127.0.0.1:$port;
    location = /ok { return 200 "ok"; }
    location = /16k { alias $run/www/16k.txt; }
  }
}
EOF
  fi
  nginx -c "$run/be-$port.conf" -p "$run" -e "$run/be-$port.err" > "$run/be-$port.out" 2>&1 &
  pids+=($!); backends+=($!)
done
for port in "$be1" "$be2"; do
  wait_url "http://127.0.0.1:$port/ok" || { cat "$run/be-$port.out" "$run/be-$port.err" >&2; exit 1; }
done

# The bench's own config, and a TLS listener beside it (a throwaway certificate). In a directory
# of their own: the config and certificate watchers watch it, and the logs would wake them.
gw=$(free_port); tls=$(free_port)
LISTEN_ADDR=127.0.0.1:$gw UPSTREAMS=127.0.0.1:$be1,127.0.0.1:$be2 \
  bash "$here/gatehouse-gw.sh" --print-config > "$run/cfg/gatehouse.yaml"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=pgo.test \
  -keyout "$run/cfg/key.pem" -out "$run/cfg/cert.pem" 2>/dev/null
sed -i "s|^listeners: \[\(.*\)\]$|listeners: [\1, {name: tls, address: '127.0.0.1:$tls', tls: {certificates: [{cert: $run/cfg/cert.pem, key: $run/cfg/key.pem}]}}]|" \
  "$run/cfg/gatehouse.yaml"
grep -q "name: tls" "$run/cfg/gatehouse.yaml" || { echo "no TLS listener in the training config" >&2; exit 1; }
u=http://127.0.0.1:$gw; s=https://127.0.0.1:$tls
# One worker thread (the bench's way), then the default multi-threaded runtime.
for threads in 1 default; do
  args=(); [ "$threads" = default ] || args=(--worker-threads "$threads")
  LLVM_PROFILE_FILE="$data/gh-%p-%m.profraw" "$gen" run -c "$run/cfg/gatehouse.yaml" "${args[@]}" \
    > "$run/gw.log" 2>&1 & g=$!; pids+=("$g")
  wait_url "$u/ok" || { cat "$run/gw.log" >&2; exit 1; }
  if [ "$threads" = 1 ]; then
    load ok --h1 -n 60000 -c 64 "$u/ok"
    load ok --h1 -n 40000 -c 256 "$u/ok"
    load ok --h1 -n 20000 -c 64 "$u/16k"
    load ok --h1 -n 5000 -c 1 "$u/ok"
    load ok -n 20000 -c 16 -m 10 "$u/ok"
    load ok --h1 -n 20000 -c 16 "$s/ok"
    load ok -n 20000 -c 16 -m 10 "$s/ok"
  else
    load ok --h1 -n 20000 -c 64 "$u/ok"
    load ok -n 10000 -c 16 -m 10 "$s/ok"
  fi
  stop "$g"
done

# The demo: retries, breakers, the cache, local replies, the admin API. Its backends take the
# three ports after its listener's.
read -r d a < <(python3 -c '
import socket
def free(p):
    s = socket.socket()
    try: s.bind(("127.0.0.1", p)); return True
    except OSError: return False
    finally: s.close()
for base in range(20000, 60000, 7):
    if all(free(base + i) for i in range(5)): print(base, base + 4); break')
LLVM_PROFILE_FILE="$data/demo-%p-%m.profraw" "$gen" demo --listen "127.0.0.1:$d" --admin "127.0.0.1:$a" \
  > "$run/demo.log" 2>&1 & g=$!; pids+=("$g")
wait_url "http://127.0.0.1:$d/api/products" || { cat "$run/demo.log" >&2; exit 1; }
for path in /api/products /v1/proxy/stable/hello '/api/catalog?max_age=30'; do
  load ok --h1 -n 2000 -c 8 "http://127.0.0.1:$d$path"
done
echo "(the next two answer 500s and a 404 on purpose: h2load counts them as failed)" >&2
for path in '/v1/proxy/flaky/?status=500' /nothing/here; do
  load answered --h1 -n 2000 -c 8 "http://127.0.0.1:$d$path"
done
curl -fs -o /dev/null "http://127.0.0.1:$a/metrics"
stop "$g"

for p in "${backends[@]}"; do stop "$p"; done

"$profdata" merge -o "$data/merged.profdata" "$data"/*.profraw
# Named by its content: cargo rebuilds when RUSTFLAGS change, not when a file they name does.
merged=$root/target/pgo-$(sha256sum "$data/merged.profdata" | cut -c1-16).profdata
cp "$data/merged.profdata" "$merged"
RUSTFLAGS="-Cprofile-use=$merged -Cllvm-args=-pgo-warn-missing-function=false" \
  cargo build --release --bin gatehouse --manifest-path "$root/Cargo.toml" --target "$triple" \
  --target-dir "$root/target/pgo" >&2
echo "$root/target/pgo/$triple/release/gatehouse"
