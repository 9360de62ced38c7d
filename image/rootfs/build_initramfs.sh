#!/usr/bin/env bash
# Builds the small boot initramfs of the chain test: static busybox, the
# virtio_blk/virtio_net/ext4 modules (with their dependencies, in load order)
# from the Debian kernel package, and initramfs/init, which mounts the rootfs
# disk and switch_roots to systemd. Uncompressed newc cpio (boots faster).
#
# usage: build_initramfs.sh KERNEL.deb OUT.cpio
set -euo pipefail

deb=${1:?usage: build_initramfs.sh KERNEL.deb OUT.cpio}
out=${2:?usage: build_initramfs.sh KERNEL.deb OUT.cpio}
here=$(cd "$(dirname "$0")" && pwd)
die() { echo "build_initramfs: $*" >&2; exit 1; }
for t in busybox:busybox-static cpio:cpio depmod:kmod modprobe:kmod dpkg-deb:dpkg; do
  command -v "${t%%:*}" >/dev/null || die "${t%%:*} is missing (Debian package: ${t#*:})"
done
case " $(/bin/busybox --list 2>/dev/null | tr '\n' ' ') " in
  *" insmod "*" switch_root "*) ;;
  *) die "/bin/busybox lacks insmod/switch_root (Debian package: busybox-static)" ;;
esac

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$(dirname "$out")/initramfs-work.XXXXXX")
trap 'rm -rf "$work"' EXIT
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work" --wildcards './lib/modules/*' './usr/lib/modules/*' 2>/dev/null ||
  dpkg-deb -x "$deb" "$work"
mods=$work/lib/modules
[ -d "$mods" ] || mods=$work/usr/lib/modules
kver=$(basename "$(ls -d "$mods"/*/ | head -n 1)")
depmod -b "$(dirname "$(dirname "$mods")")" "$kver"

root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
install -m 0755 "$here/initramfs/init" "$root/init"
# Dependencies first (modprobe --show-depends prints them in load order);
# crc32c_generic because ext4 asks the crypto API for crc32c at mount time.
for m in virtio_pci virtio_blk failover net_failover virtio_net crc32c_generic ext4; do
  modprobe -d "$(dirname "$(dirname "$mods")")" -S "$kver" --show-depends "$m" |
    awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  cp "$ko" "$root/lib/modules/"
  basename "$ko" >>"$root/lib/modules/load-order"
done
(cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
  cpio --null -o -H newc --reproducible -R 0:0 --quiet) >"$out.tmp"
mv "$out.tmp" "$out"
echo "build_initramfs: $out ($(du -h "$out" | cut -f1)), modules: $(paste -sd' ' "$root/lib/modules/load-order")" >&2
