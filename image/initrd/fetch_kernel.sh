#!/bin/bash
# Fetches the Debian kernel package and extracts what the VMs need:
#   fetch_kernel.sh OUT_DIR CACHE_DIR [DEB_ARCH]
# OUT_DIR/vmlinuz, OUT_DIR/modules/*.ko (NIC drivers, virtio_blk), OUT_DIR/modules/load-order,
# OUT_DIR/kernel.stamp ("package version sha256"). The .deb is cached in
# CACHE_DIR/debs/ and checked against the SHA256 apt knows. Outputs are rewritten only
# when the package changes, so make rebuilds dependants only then.
# DEB_ARCH: Debian architecture of the kernel (default amd64; arm64 on an amd64 host is
# fetched through dpkg's foreign architectures, see fetch_deb.sh).
# KERNEL_PACKAGE=linux-image-X overrides the package (default: what linux-image-DEB_ARCH depends on).
set -euo pipefail
out=$1
cache=$2/debs
arch=${3:-amd64}
here=$(dirname "$(readlink -f "$0")")
"$here/require_tools.sh" apt-get:apt dpkg-deb:dpkg sha256sum:coreutils flock:util-linux
mkdir -p "$out" "$cache"
"$here/fetch_deb.sh" --ensure-arch "$arch"
# One fetch at a time per cache (parallel test runs share build/).
exec 9>"$cache/.lock"
flock 9

# NIC drivers, and virtio_blk for the local disks (booting an installed system), in the order
# busybox insmod needs them (no modules.dep in the .deb), then 802.1Q VLANs (8021q and what it
# needs) for the initramfs's vlan= (image/initrd/net-setup).
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net e1000
  virtio_blk llc stp garp mrp 8021q)

resolve() {
  local name=${KERNEL_PACKAGE:-$(apt-cache depends "linux-image-$arch:$arch" 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ && !found {print $2; found = 1}')}
  [[ -n $name ]] && echo "${name%:*}:$arch"
}
pkg=$(resolve)
has_version() { [[ -n $1 && $(apt-cache show --no-all-versions "$1" 2>/dev/null) == *$'\nSHA256: '* ]]; }
if ! has_version "$pkg" && [[ $(id -u) == 0 ]] && ! ls "$cache"/linux-image-*_"$arch".deb >/dev/null 2>&1; then
  # A fresh machine (or container) may have no package lists yet.
  echo "apt has no kernel package metadata: running apt-get update" >&2
  apt-get update -qq >&2 || true
  pkg=$(resolve)
fi
deb="" sha="" version=""
if [[ -n $pkg ]]; then
  info=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null || true)
  version=$(awk '/^Version:/ {print $2; exit}' <<<"$info")
  sha=$(awk '/^SHA256:/ {print $2; exit}' <<<"$info")
  file=$(awk '/^Filename:/ {print $2; exit}' <<<"$info")
  [[ -n $file ]] && deb=$cache/$(basename "$file")
fi
if [[ -z $deb && -n ${KERNEL_PACKAGE:-} ]]; then
  echo "error: apt knows no package $KERNEL_PACKAGE (KERNEL_PACKAGE)" >&2
  exit 1
fi
if [[ -z $deb ]]; then
  # No apt metadata (offline machine): reuse the newest cached kernel package.
  deb=$(ls -1 "$cache"/linux-image-*_"$arch".deb 2>/dev/null | sort -V | tail -n 1 || true)
  [[ -n $deb ]] || { echo "error: cannot resolve the Debian kernel package (run apt-get update, or set KERNEL_PACKAGE)" >&2; exit 1; }
  sha=$(sha256sum "$deb" | cut -d' ' -f1)
  pkg=$(dpkg-deb -f "$deb" Package)
  version=$(dpkg-deb -f "$deb" Version)
  echo "warning: no apt metadata for the kernel package, using cached $deb" >&2
fi
stamp="${pkg%:*} $version $sha"
# modules.list: the modules extracted last time (a change of the list extracts them again).
if [[ -f $out/kernel.stamp && $(cat "$out/kernel.stamp") == "$stamp" && -f $out/vmlinuz &&
  $(cat "$out/modules.list" 2>/dev/null) == "${modules[*]}" ]]; then
  exit 0
fi

if [[ ! -f $deb ]] || [[ $(sha256sum "$deb" | cut -d' ' -f1) != "$sha" ]]; then
  echo "downloading $pkg $version" >&2
  rm -f "$deb"
  (cd "$cache" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$pkg=$version" >&2)
  got=$(sha256sum "$deb" | cut -d' ' -f1)
  [[ $got == "$sha" ]] || { echo "error: $deb has SHA256 $got, apt expects $sha" >&2; rm -f "$deb"; exit 1; }
fi

tmp=$(mktemp -d "$out/.extract.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
kver=$(basename "$(ls -d "$tmp"/lib/modules/*/ | head -n 1)")
rm -rf "$out/modules"
mkdir -p "$out/modules"
for m in "${modules[@]}"; do
  ko=$(find "$tmp/lib/modules/$kver" -name "$m.ko" -print -quit)
  # Built into this kernel (arm64 has virtio and virtio_ring built in): nothing to load.
  [[ -z $ko ]] && grep -q "/$m\.ko\$" "$tmp/lib/modules/$kver/modules.builtin" 2>/dev/null && continue
  [[ -n $ko ]] || { echo "error: module $m.ko is not in $pkg" >&2; exit 1; }
  cp "$ko" "$out/modules/"
  echo "$m" >>"$out/modules/load-order"
done
# Every Ethernet driver plus its dependencies, with modules.dep/modules.alias from depmod, for
# `make initrd INITRD_NICS=all` (real hardware: /init loads what the PCI devices ask for).
rm -rf "$out/nic-modules"
if command -v depmod >/dev/null && command -v modinfo >/dev/null; then
  mods=$tmp/lib/modules/$kver
  dest=$out/nic-modules/lib/modules/$kver
  declare -A by_name=()
  while IFS= read -r ko; do
    name=$(basename "$ko" .ko)
    by_name[${name//-/_}]=$ko
  done < <(find "$mods/kernel" -name '*.ko')
  queue=()
  while IFS= read -r ko; do queue+=("$ko"); done < <(find "$mods/kernel/drivers/net/ethernet" -name '*.ko')
  # Disk controllers too (NVMe, SATA/AHCI, SCSI disks): the local disks of an installed host.
  while IFS= read -r ko; do queue+=("$ko"); done < <(find "$mods/kernel/drivers/nvme/host" "$mods/kernel/drivers/ata" "$mods/kernel/drivers/scsi/sd_mod.ko" -name '*.ko' 2>/dev/null)
  for m in "${modules[@]}"; do [[ -n ${by_name[$m]:-} ]] && queue+=("${by_name[$m]}"); done
  declare -A seen=()
  while ((${#queue[@]} > 0)); do
    ko=${queue[-1]}
    unset 'queue[-1]'
    [[ -n ${seen[$ko]:-} ]] && continue
    seen[$ko]=1
    rel=${ko#"$mods"/}
    mkdir -p "$dest/$(dirname "$rel")"
    cp "$ko" "$dest/$rel"
    IFS=, read -r -a deps <<<"$(modinfo -F depends "$ko")"
    for d in "${deps[@]}"; do
      [[ -n $d && -n ${by_name[${d//-/_}]:-} ]] && queue+=("${by_name[${d//-/_}]}")
    done
  done
  cp "$mods"/modules.builtin "$mods"/modules.builtin.modinfo "$mods"/modules.order "$dest/" 2>/dev/null || true
  depmod -b "$out/nic-modules" "$kver"
else
  echo "warning: depmod/modinfo missing (Debian package kmod): INITRD_NICS=all is unavailable" >&2
fi
cp "$tmp/boot/vmlinuz-$kver" "$tmp/vmlinuz"
mv "$tmp/vmlinuz" "$out/vmlinuz"
echo "${modules[*]}" >"$out/modules.list"
echo "$stamp" >"$out/kernel.stamp"
echo "kernel: $pkg $version ($kver)" >&2
