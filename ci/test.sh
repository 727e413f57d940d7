#!/usr/bin/env bash
# The project's test command (the README's front door): installs what it needs, then
# checks formatting and lints, runs the host test suite (which includes the SSH device
# tests against private sshd instances, the armv7-vs-host parity test and the QEMU
# cost-count tests), the nine models once more on the AVX2 kernels where AVX-512 can be
# hidden, the runtime's own tests on armv7 under qemu-arm, a bounded fuzz
# run of model loading, and the QEMU instruction-count regression report.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
step() { printf '\n==> %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
triple=armv7-unknown-linux-gnueabihf
# CI builds each crate once, so incremental state would only take disk space.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The builds below write about 5 GB (3.8 GB in target/, 1.3 GB in the fuzz build); a
# full disk shows up later as a linker's bus error, so say how much room there is first.
free_gb="$(df -P -BG . | awk 'NR == 2 { sub("G", "", $4); print $4 }')"
echo "disk: ${free_gb} GB free in $root (target/ is $(du -sh target 2>/dev/null | cut -f1 || echo empty))"
if [ "${free_gb:-0}" -lt 10 ]; then
  echo "warning: under 10 GB free; the build may run out of disk" >&2
fi

step "setup"
bash ci/setup.sh

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "armv7 release build of edge-run (shared by the parity and QEMU tests)"
cargo build --release --target "$triple" -p edge-runtime --bin edge-run
export EDGE_ARMV7_EDGE_RUN="$root/target/$triple/release/edge-run"

step "host tests"
cargo test --workspace

step "the nine models on the AVX2 kernels against tract (AVX-512 hidden from the test)"
if grep -qw cpuid_fault /proc/cpuinfo; then
  gcc -O2 -shared -fPIC -o "$root/target/hide_avx512.so" bench-harness/peers/hide_avx512.c
  # The test binary the host tests built (a `cargo test -p ... --test ...` would resolve
  # the dependencies' features differently and rebuild them), run under the preload;
  # never cargo or rustc.
  parity_test="$(cargo test --workspace --no-run --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "edge_engine_models":
        print(m["executable"])')"
  [ -x "$parity_test" ] || { echo "edge_engine_models test binary not found" >&2; exit 1; }
  (cd runtime && LD_PRELOAD="$root/target/hide_avx512.so" "$parity_test")
else
  echo "not run: this CPU cannot fault CPUID, so AVX-512 cannot be hidden here" \
    "(the AVX2 kernels still ran against their references in the unit tests)"
fi

step "armv7 tests under qemu-arm (Cortex-A9, NEON)"
cargo test --target "$triple" -p edge-runtime

step "fuzz model loading (bounded)"
bash ci/fuzz.sh "${EDGE_FUZZ_RUNS:-20000}"

step "QEMU instruction-count regression report (all nine models, imx6)"
reports="$root/target/ci-reports"
mkdir -p "$reports"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
"$root/target/debug/edgebench" qemu --target imx6 \
  --json "$reports/qemu-$stamp.json" --markdown "$reports/qemu-$stamp.md"
cat "$reports/qemu-$stamp.md"

step "done"
echo "disk: target/ is $(du -sh target | cut -f1), the fuzz build $(du -sh runtime/fuzz/target | cut -f1); $(df -P -BG . | awk 'NR == 2 { print $4 }') free"
