#!/usr/bin/env bash
# Runs every test Gatehouse has: formatting, clippy (-D warnings), unit, integration and
# doc tests of the whole workspace. Installs what the tests need when it is missing.
# Works on a fresh Debian 12 machine with only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the tests need beyond cargo, from Debian's packages when missing:
# redis-server (shared rate limits are tested against a real Redis) and promtool and the
# prometheus server (the prometheus package: the /metrics output, the alert rules and the
# Grafana dashboard's queries are checked with them, tests/metrics.rs and tests/monitoring.rs).
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# dnsmasq-base: DNS discovery is tested against a real DNS server (tests/discovery_dns.rs).
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need_apt+=(dnsmasq-base)
# etcd-server: etcd discovery and the config from etcd are tested against a real etcd (tests/etcd.rs).
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
# pebble: ACME certificates are issued and renewed by Let's Encrypt's test server (tests/acme.rs).
command -v pebble >/dev/null 2>&1 || need_apt+=(pebble)
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || need_apt+=(prometheus)
# chromium (the dashboard is tested in a real headless browser) and node/npm for Playwright.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# jemalloc (the binary's allocator) is built from C with make.
command -v make >/dev/null 2>&1 || need_apt+=(make)
# The container image and compose file are built and run with podman (runc: crun refuses some
# VMs' hybrid cgroups), podman-compose and CNI's dnsname plugin (service names on the compose
# network); the image tests strip the binary (binutils). The Debian package's unit is checked
# with systemd-analyze (systemd) and its postinst needs adduser; debootstrap makes, once per
# machine, the Debian image whose systemd runs the unit (tests/container.rs, tests/package.rs,
# tests/systemd_unit.rs).
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
command -v runc >/dev/null 2>&1 || need_apt+=(runc)
command -v podman-compose >/dev/null 2>&1 || need_apt+=(podman-compose)
[ -x /usr/lib/cni/dnsname ] || need_apt+=(golang-github-containernetworking-plugin-dnsname)
command -v strip >/dev/null 2>&1 || need_apt+=(binutils)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v adduser >/dev/null 2>&1 || need_apt+=(adduser)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy || true
# cargo-deb builds the Debian package (tests/package.rs); pinned, so CI packages the same way
# (about 3 minutes to build once, on 2 cores).
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --version 3.8.0

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked

echo "== browser tests (headless Chromium, Playwright)"
# The binary `cargo test` built for the integration tests is the one tested: a `cargo build` here
# would compile much of the tree again (dev-dependencies' features are unified into test builds
# only), 1.5 minutes on 2 cores.
[ -x "${CARGO_TARGET_DIR:-target}/debug/gatehouse" ] || cargo build --locked --bin gatehouse
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
(cd tests/browser && node --test --test-concurrency=1)
