#!/bin/bash
# The foreign-architecture files a cross-built initramfs needs, from Debian packages:
#   fetch_sysroot.sh OUT_DIR CACHE_DIR DEB_ARCH
# OUT_DIR/root: busybox-static, libc6 and libgcc-s1 of DEB_ARCH, unpacked with `dpkg-deb -x`
# (never installed; each .deb checked against apt's SHA256 by fetch_deb.sh, cached in
# CACHE_DIR/debs). OUT_DIR/sysroot.stamp lists "package version sha256" and is rewritten only
# when a package changes, so make rebuilds dependants only then.
set -euo pipefail
out=$1 cache=$2/debs arch=$3
here=$(dirname "$(readlink -f "$0")")
packages=(busybox-static libc6 libgcc-s1)
mkdir -p "$out"

stamp=""
debs=()
for p in "${packages[@]}"; do
  line=$("$here/fetch_deb.sh" "$cache" "$p:$arch")
  read -r deb version sha <<<"$line"
  debs+=("$deb")
  stamp+="$p:$arch $version $sha"$'\n'
done
if [[ -f $out/sysroot.stamp && $(cat "$out/sysroot.stamp")$'\n' == "$stamp" && -x $out/root/bin/busybox ]]; then
  exit 0
fi
tmp=$(mktemp -d "$out/.root.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$tmp"; done
rm -rf "$out/root"
mv "$tmp" "$out/root"
printf '%s' "$stamp" >"$out/sysroot.stamp"
echo "sysroot: $out/root ($(tr '\n' ' ' <"$out/sysroot.stamp" | awk '{for (i = 1; i <= NF; i += 3) printf "%s %s  ", $i, $(i+1)}'))" >&2
