#!/bin/bash
# Builds the kernel an arm64 VM boots the bootloader initramfs with:
#   build_kexec_kernel.sh OUT CACHE_DIR CONFIG_FRAGMENT
# Debian's arm64 kernels (every flavour, bookworm to sid) are built without
# CONFIG_KEXEC_FILE, so kexec_file_load answers ENOSYS on them. This builds a small
# kernel from Debian's linux-source package (checked against apt's SHA256 by fetch_deb.sh)
# with `allnoconfig` plus CONFIG_FRAGMENT (KEXEC_FILE, virtio-net built in, PL011
# console), cross-compiled with Debian's gcc-aarch64-linux-gnu. OUT is the uncompressed
# arm64 Image; OUT.stamp names the source package, the fragment and the compiler, and the
# build runs only when one of them changes (about 5 minutes on 2 cores; the tree is removed).
set -euo pipefail
out=$1 cache=$2 fragment=$3
here=$(dirname "$(readlink -f "$0")")
cross=aarch64-linux-gnu-
"$here/../initrd/require_tools.sh" "${cross}gcc:gcc-aarch64-linux-gnu" gcc:gcc /usr/include/stdio.h:libc6-dev \
  make:make flex:flex bison:bison bc:bc xz:xz-utils
mkdir -p "$(dirname "$out")"
src_pkg=$(apt-cache depends linux-source 2>/dev/null | awk '/Depends: linux-source-[0-9]/ && !found {print $2; found = 1}')
[[ -n $src_pkg ]] || { echo "error: apt knows no linux-source package (run apt-get update)" >&2; exit 1; }
line=$("$here/../initrd/fetch_deb.sh" "$cache/debs" "$src_pkg")
read -r deb version sha <<<"$line"
stamp="$src_pkg $version $sha fragment $(sha256sum "$fragment" | cut -c1-16) $(${cross}gcc -dumpfullversion)"
if [[ -f $out && $(cat "$out.stamp" 2>/dev/null) == "$stamp" ]]; then
  exit 0
fi

t0=$(date +%s)
echo "building the arm64 VM kernel from $src_pkg $version (KEXEC_FILE; a few minutes)" >&2
work=$(mktemp -d "$cache/.kernel-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards './usr/src/linux-source-*.tar.xz' | xz -dc | tar -x -C "$work"
tree=$(echo "$work"/linux-source-*)
kmake() { make -s -C "$tree" ARCH=arm64 CROSS_COMPILE="$cross" "$@"; }
kmake KCONFIG_ALLCONFIG="$(readlink -f "$fragment")" allnoconfig
# Kconfig drops a setting whose dependencies are not met without a word: check each one.
missing=$(grep -E '^CONFIG_' "$fragment" | while IFS= read -r want; do
  grep -qxF "$want" "$tree/.config" || echo "$want"
done)
[[ -z $missing ]] || { echo "error: the kernel config lacks: $(echo $missing)" >&2; exit 1; }
kmake -j"$(nproc)" Image
cp "$tree/arch/arm64/boot/Image" "$out.tmp.$$"
mv "$out.tmp.$$" "$out"
echo "$stamp" >"$out.stamp"
echo "arm64 VM kernel: $out ($(du -h "$out" | cut -f1), $(($(date +%s) - t0)) s)" >&2
