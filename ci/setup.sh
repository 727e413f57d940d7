#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine with only Rust, gcc
# and Python: the armv7 cross toolchain, qemu-user, OpenSSH (the device tests start
# their own sshd) and the armv7 Rust target. Idempotent: skips what is present.
set -euo pipefail
packages=(qemu-user gcc-arm-linux-gnueabihf libc6-dev-armhf-cross openssh-server openssh-client)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "ci/setup.sh: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup target list --installed | grep -qx armv7-unknown-linux-gnueabihf ||
  rustup target add armv7-unknown-linux-gnueabihf
for c in rustfmt clippy; do
  rustup component list --installed | grep -q "^$c" || rustup component add "$c"
done
# The onnxruntime peer comparison (bench-harness/peers/) and its test run in a private
# venv: onnxruntime and numpy from PyPI.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/peers-venv"
if ! "$venv/bin/python" -c "import onnxruntime, numpy" >/dev/null 2>&1; then
  echo "ci/setup.sh: creating $venv with onnxruntime and numpy"
  # Debian's own python3 needs python3-venv for ensurepip.
  if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check onnxruntime numpy
fi
