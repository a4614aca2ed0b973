#!/usr/bin/env bash
# Scans a Gatehouse TLS listener with two third-party scanners: testssl.sh (Debian's `testssl`)
# and sslyze (PyPI, in a venv under target/), the latter judged against Mozilla's
# "intermediate" profile. The certificate is a fresh ECDSA P-256 leaf signed by a fresh CA,
# valid 90 days, so the only findings left are the gateway's own.
#   GATEHOUSE_BIN (target/release/gatehouse)
# Installs what is missing (apt, pip). Not in CI: it is slow and its verdicts change with the
# scanners' versions. Exits non-zero when sslyze finds the listener not compliant.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${GATEHOUSE_BIN:-$root/target/release/gatehouse}
[ -x "$bin" ] || (cd "$root" && cargo build --release --bin gatehouse)
command -v testssl >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq testssl.sh; }
venv=$root/target/sslyze-venv
[ -x "$venv/bin/sslyze" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q sslyze; }

run=$(mktemp -d /tmp/gatehouse-scan.XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$run"; }
trap cleanup EXIT
cd "$run"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 \
  -keyout ca.key -out ca.crt -subj "/CN=Gatehouse scan CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr \
  -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > ext
openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 90 -extfile ext \
  -out leaf.crt 2>/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
up=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > gw.yaml <<EOF
listeners:
  - name: https
    address: 127.0.0.1:$port
    tls:
      certificates: [{cert: leaf.crt, key: leaf.key}]
      hsts: {max_age: 8760h}
clusters:
  - name: app
    endpoints: [{address: "127.0.0.1:$up"}]
routes:
  - {name: all, cluster: app}
EOF
"$bin" run -c gw.yaml > gw.log 2>&1 &
pid=$!
for _ in $(seq 100); do curl -s -o /dev/null --cacert ca.crt "https://localhost:$port/" && break; sleep 0.1; done

echo "== testssl.sh"
testssl --quiet --color 0 --warnings off -p -s -f -S -P -U -h --ip 127.0.0.1 "localhost:$port" || true
echo "== sslyze, against Mozilla intermediate"
"$venv/bin/sslyze" --certinfo_ca_file ca.crt --mozilla_config=intermediate "localhost:$port{127.0.0.1}"
