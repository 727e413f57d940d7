#!/usr/bin/env bash
# Fuzzes edge-runtime's model loading for a bounded number of runs (default 20000) from a
# fixed seed, so that a CI run is repeatable; crashes found earlier are kept as seeds.
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
# Usage: ci/fuzz.sh [runs]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-20000}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cd "$root/runtime"
# Work on a copy of the seed corpus so new inputs found by the run stay out of git.
corpus="$root/target/fuzz-corpus/load_model"
mkdir -p "$corpus"
cp -n fuzz/seeds/* "$corpus/"
export RUSTC_BOOTSTRAP=1
# -rss_limit_mb: loading must refuse absurd shapes before allocating, so a blow-up is a bug.
# No sanitizer: the loader is safe Rust over tract (panics and blow-ups are what we look
# for), and an ASan build of tract would take most of the bounded CI slot.
cargo fuzz run --sanitizer none load_model "$corpus" -- \
  -runs="$runs" -seed=1 -max_total_time=600 -rss_limit_mb=2048 -max_len=65536 -timeout=20
