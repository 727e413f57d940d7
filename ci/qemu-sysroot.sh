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
cross_cc="$(get linker)"
# The prefix is built once and then only read: many guests start at once (cargo runs
# test binaries in parallel, a fleet test deploys to two boards), so the build holds a
# lock and is skipped when the stamp matches its inputs. Rewriting files under a running
# guest could let it read a truncated cpuinfo or cache entry.
stamp_inputs() {
  cat "${BASH_SOURCE[0]}" "$toml" "$root/ci/fixed-getrandom.c" 2>/dev/null
  cat "$root/targets/$profile.cpuinfo" 2>/dev/null || true
  echo "$libc_root"
  if [ -n "$cross_cc" ] && command -v "$cross_cc" >/dev/null 2>&1; then echo "cc=$cross_cc"; fi
}
want="$(stamp_inputs | sha256sum | cut -d' ' -f1)"
stamp="$prefix/.edge-prefix-stamp"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$prefix"
  exit 0
fi
mkdir -p "$(dirname "$prefix")"
exec 9>"$prefix.lock"
flock 9
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$prefix"
  exit 0
fi
mkdir -p "$prefix/proc" "$prefix/etc" "$prefix/usr"
ln -sfn "$libc_root/lib" "$prefix/lib"
ln -sfn "$libc_root/lib" "$prefix/usr/lib"
: > "$prefix/etc/ld.so.cache"
if [ -f "$root/targets/$profile.cpuinfo" ]; then
  cmp -s "$root/targets/$profile.cpuinfo" "$prefix/proc/cpuinfo" 2>/dev/null ||
    cp "$root/targets/$profile.cpuinfo" "$prefix/proc/cpuinfo"
fi
# tract sizes its matrix blocking from /sys/devices/system/cpu/cpu0/cache/indexN, which
# qemu-user shows from the HOST (so counts would depend on the CI machine). A 32-bit ARM
# board kernel usually exposes none: shadow every indexN with level 0 / size 0, which tract
# skips, and a one-CPU topology. (-L is looked up per file, so absent files would fall
# through to the host's.)
cache_dir="$prefix/sys/devices/system/cpu/cpu0/cache"
for idx in $(seq 0 15); do
  mkdir -p "$cache_dir/index$idx"
  for f in level size; do echo 0 > "$cache_dir/index$idx/$f"; done
  echo Unified > "$cache_dir/index$idx/type"
  echo 0 > "$cache_dir/index$idx/shared_cpu_list"
done
mkdir -p "$prefix/sys/devices/system/cpu/cpu0/topology"
echo 0 > "$prefix/sys/devices/system/cpu/cpu0/topology/thread_siblings_list"
echo 0 > "$prefix/sys/devices/system/cpu/online"
echo 0 > "$prefix/sys/devices/system/cpu/possible"
echo 0 > "$prefix/sys/devices/system/cpu/present"
# Deterministic getrandom(2) for the pinned cost counter (see ci/fixed-getrandom.c);
# preloaded only by `edgebench qemu` (qemu -E LD_PRELOAD=/opt/edge/libfixed_getrandom.so).
shim="$prefix/opt/edge/libfixed_getrandom.so"
if [ -n "$cross_cc" ] && command -v "$cross_cc" >/dev/null 2>&1; then
  mkdir -p "$prefix/opt/edge"
  "$cross_cc" -O2 -shared -fPIC -o "$shim.tmp.$$" "$root/ci/fixed-getrandom.c"
  mv -f "$shim.tmp.$$" "$shim"
fi
echo "$want" > "$stamp.tmp.$$" && mv -f "$stamp.tmp.$$" "$stamp"
echo "$prefix"
