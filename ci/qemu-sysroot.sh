#!/usr/bin/env bash
# Builds (idempotently) the private QEMU prefix for a target profile and prints its path.
#
# qemu-user passes the HOST /proc/cpuinfo and /sys cache entries through, so tract
# would see an x86 CPU and silently take its non-NEON kernels. `qemu -L PREFIX`
# looks up every absolute path in PREFIX first, so the prefix carries the board's
# /proc/cpuinfo (targets/<profile>.cpuinfo), an empty ld.so.cache (the host's would
# otherwise be read by the guest loader) and links to the cross C library.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
profile="${1:-imx6}"
toml="$root/targets/$profile.toml"
[ -f "$toml" ] || { echo "qemu-sysroot: no target profile $toml" >&2; exit 2; }
get() { sed -n "s/^$1 *= *\"\(.*\)\"/\1/p" "$toml" | head -n1; }
libc_root="$(get qemu_sysroot)"
[ -d "$libc_root/lib" ] || { echo "qemu-sysroot: $libc_root/lib missing (apt-get install libc6-dev-armhf-cross)" >&2; exit 2; }
prefix="${EDGE_QEMU_PREFIX_DIR:-$root/target/qemu-sysroot}/$profile"
mkdir -p "$prefix/proc" "$prefix/etc" "$prefix/usr"
ln -sfn "$libc_root/lib" "$prefix/lib"
ln -sfn "$libc_root/lib" "$prefix/usr/lib"
: > "$prefix/etc/ld.so.cache"
if [ -f "$root/targets/$profile.cpuinfo" ]; then
  cmp -s "$root/targets/$profile.cpuinfo" "$prefix/proc/cpuinfo" 2>/dev/null ||
    cp "$root/targets/$profile.cpuinfo" "$prefix/proc/cpuinfo"
fi
echo "$prefix"
