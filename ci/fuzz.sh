#!/usr/bin/env bash
# Fuzzes edge-runtime's model loading for a bounded time (default 60 s).
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them.
# Usage: ci/fuzz.sh [seconds]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cd "$root/runtime"
# Work on a copy of the seed corpus so new inputs found by the run stay out of git.
corpus="$root/target/fuzz-corpus/load_model"
mkdir -p "$corpus"
cp -n fuzz/seeds/* "$corpus/"
export RUSTC_BOOTSTRAP=1
# -rss_limit_mb: loading must refuse absurd shapes before allocating, so a blow-up is a bug.
cargo fuzz run load_model "$corpus" -- \
  -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -timeout=20
