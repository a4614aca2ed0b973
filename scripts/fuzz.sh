#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/) for FUZZ_SECONDS each (default 300). Not part of CI.
# cargo-fuzz needs nightly features; with only a stable toolchain here, RUSTC_BOOTSTRAP=1 lets
# stable rustc accept them. Installs cargo-fuzz when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
seconds=${FUZZ_SECONDS:-300}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(normalize_path request_target)
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${seconds}s"
  RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$t" -- -max_total_time="$seconds" -max_len=512
done
