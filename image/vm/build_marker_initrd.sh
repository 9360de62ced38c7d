#!/bin/bash
# Builds the marker "discovery" initrd: static busybox + marker/init, gzip newc cpio.
#   build_marker_initrd.sh OUT [BUSYBOX]
# BUSYBOX: a static busybox of another architecture (default: the host's /bin/busybox).
set -euo pipefail
out=$1
busybox=${2:-/bin/busybox}
here=$(dirname "$(readlink -f "$0")")
"$here/../initrd/require_tools.sh" cpio:cpio
[[ -n ${2:-} ]] || "$here/../initrd/require_tools.sh" dpkg=busybox-static:busybox-static /bin/busybox:busybox-static
mkdir -p "$(dirname "$out")"
root=$(mktemp -d "$(dirname "$out")/.marker.XXXXXX")
trap 'rm -rf "$root" "$out.tmp.$$"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,tmp}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
install -m 0755 "$here/marker/init" "$root/init"
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
(cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
  cpio --null -o -H newc --reproducible -R 0:0 --quiet) | gzip -9 -n >"$out.tmp.$$"
mv "$out.tmp.$$" "$out"
echo "marker initrd: $out ($(du -h "$out" | cut -f1))" >&2
