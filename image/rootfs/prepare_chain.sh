#!/usr/bin/env bash
# Builds (or reuses) everything the chain test boots, into OUT_DIR:
#   OUT_DIR/vmlinuz          Debian kernel (image/initrd/fetch_kernel.sh; the .deb
#                            is cached in build/cache/debs)
#   OUT_DIR/initramfs.cpio   boot initramfs that mounts the rootfs disk (build_initramfs.sh)
#   OUT_DIR/rootfs.tar.zst   Debian + systemd rootfs (build_rootfs.sh), a link to
#                            build/cache/rootfs-<key>.tar.zst
#   OUT_DIR/marker.img       the marker "discovery" initrd (image/vm/build_marker_initrd.sh)
# Each output is rebuilt only when the checksum of its inputs changes (the key is
# kept next to it in *.key). Prints what each stage cost.
#
# usage: prepare_chain.sh OUT_DIR [CACHE_DIR]   (CACHE_DIR default: OUT_DIR/../cache)
set -euo pipefail

out=${1:?usage: prepare_chain.sh OUT_DIR [CACHE_DIR]}
mkdir -p "$out"
out=$(readlink -f "$out")
cache=${2:-$out/../cache}
mkdir -p "$cache"
cache=$(readlink -f "$cache")
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

# key FILE... : sha256 over names, executable bits and contents of the inputs
# (only the bit git keeps: a checkout's umask must not change the key)
key() {
  local f
  for f in "$@"; do
    printf '%s %s\n' "${f#"$repo"/}" "$([ -x "$f" ] && echo x || echo -)"
    cat "$f"
  done | sha256sum | cut -c1-16
}
ms() { echo $(($(date +%s%N) / 1000000)); }
stage() { # name start_ms what
  local d=$(($(ms) - $2))
  printf 'prepare_chain: %-10s %3d.%d s  %s\n' "$1" $((d / 1000)) $(((d % 1000) / 100)) "$3" >&2
}

t=$(ms)
"$repo/image/initrd/fetch_kernel.sh" "$out/kernel" "$cache" >&2
ln -sfn kernel/vmlinuz "$out/vmlinuz"
# The initramfs takes its modules from the same package (found by its sha256).
read -r _ _ deb_sha <"$out/kernel/kernel.stamp"
deb=""
for d in "$cache"/debs/linux-image-*.deb; do
  if [ -f "$d" ] && [ "$(sha256sum "$d" | cut -d' ' -f1)" = "$deb_sha" ]; then deb=$d; fi
done
[ -n "$deb" ] || { echo "prepare_chain: no kernel package with sha256 $deb_sha in $cache/debs" >&2; exit 1; }
stage kernel "$t" "$(cut -d' ' -f1,2 "$out/kernel/kernel.stamp")"

t=$(ms)
k=$(key "$here/build_initramfs.sh" "$here/initramfs/init" "$out/kernel/kernel.stamp")
if [ -f "$out/initramfs.cpio" ] && [ "$(cat "$out/initramfs.cpio.key" 2>/dev/null)" = "$k" ]; then
  stage initramfs "$t" "cached ($k)"
else
  "$here/build_initramfs.sh" "$deb" "$out/initramfs.cpio"
  echo "$k" >"$out/initramfs.cpio.key"
  stage initramfs "$t" "built ($k)"
fi

t=$(ms)
mapfile -t guest < <(find "$here/guest" -type f | LC_ALL=C sort)
k=$(key "$here/build_rootfs.sh" "$here/packages.txt" "${guest[@]}")
rootfs=$cache/rootfs-$k.tar.zst
if [ -f "$rootfs" ]; then
  stage rootfs "$t" "cached ($rootfs)"
else
  "$here/build_rootfs.sh" "$rootfs"
  # Older rootfs builds are dead weight (a few dozen MB each).
  find "$cache" -maxdepth 1 -name 'rootfs-*.tar.zst' ! -path "$rootfs" -delete
  stage rootfs "$t" "built ($rootfs)"
fi
ln -sfn "$rootfs" "$out/rootfs.tar.zst"

t=$(ms)
k=$(key "$repo/image/vm/build_marker_initrd.sh" "$repo/image/vm/marker/init")
if [ -f "$out/marker.img" ] && [ "$(cat "$out/marker.img.key" 2>/dev/null)" = "$k" ]; then
  stage marker "$t" "cached ($k)"
else
  "$repo/image/vm/build_marker_initrd.sh" "$out/marker.img"
  echo "$k" >"$out/marker.img.key"
  stage marker "$t" "built ($k)"
fi
