#!/usr/bin/env bash
# Builds the Debian + systemd root filesystem of the chain test (tests/vm/chain_test.ts) as a
# zstd tarball: debootstrap minbase + image/rootfs/packages.txt + guest/ files.
#
# usage: build_rootfs.sh OUT.tar.zst
# env:   MIRROR (default: the Debian mirror this machine's apt uses, else
#        http://deb.debian.org/debian), SUITE (default: this machine's codename)
#
# Needs root (debootstrap chroots). No kernel or modules go into the rootfs: the
# chain test's initramfs loads the few it needs before switch_root.
set -euo pipefail

out=${1:?usage: build_rootfs.sh OUT.tar.zst}
here=$(cd "$(dirname "$0")" && pwd)

die() { echo "build_rootfs: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is missing (Debian package: debootstrap)"
command -v zstd >/dev/null || die "zstd is missing (Debian package: zstd)"

detect_mirror() {
  local m
  m=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
      /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n 1 | tr -d ' ')
  echo "${m:-http://deb.debian.org/debian}"
}
# shellcheck disable=SC1091
SUITE=${SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}
MIRROR=${MIRROR:-$(detect_mirror)}
pkgs=$(grep -vE '^\s*(#|$)' "$here/packages.txt" | paste -sd, -)

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$(dirname "$out")/rootfs-work.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

t0=$(date +%s)
echo "build_rootfs: debootstrap $SUITE from $MIRROR (minbase + $pkgs)" >&2
debootstrap --variant=minbase --include="$pkgs" "$SUITE" "$root" "$MIRROR" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
t1=$(date +%s)

# Fedora CoreOS's layout: /usr is read-only there, and /usr/local is a link to
# /var/usrlocal. The unit installs the bootloader to /usr/local/bin and names
# that directory in ReadWritePaths=, so the test boots through the same link.
mv "$root/usr/local" "$root/var/usrlocal"
ln -s ../var/usrlocal "$root/usr/local"

# Guest configuration: DHCP via systemd-networkd (its [Install] also enables
# systemd-networkd-wait-online, which makes network-online.target meaningful),
# hostname, fstab, the Deno wrapper.
# Modes: 0755 for executables, 0644 otherwise, whatever the checkout's umask.
(cd "$here/guest" && find . -type f) | while read -r f; do
  if [ -x "$here/guest/$f" ]; then m=0755; else m=0644; fi
  install -D -m "$m" "$here/guest/$f" "$root/$f"
done
systemctl --root="$root" enable systemd-networkd.service >/dev/null 2>&1
# Nobody logs in during the test (no getty prompts interleaved with the log),
# and periodic maintenance only slows a short-lived VM down.
systemctl --root="$root" mask serial-getty@ttyS0.service getty@tty1.service \
  getty-static.service e2scrub_reap.service apt-daily.timer apt-daily-upgrade.timer \
  dpkg-db-backup.timer e2scrub_all.timer fstrim.timer >/dev/null 2>&1
# First boot like a fresh FCOS machine: no machine-id yet, so systemd treats
# the boot as its first and applies presets (Ignition enables units that way).
rm -f "$root/etc/machine-id" "$root/var/lib/dbus/machine-id"

# Trim what a test VM never reads.
rm -rf "$root"/usr/share/{doc,man,info,locale,lintian}/* "$root"/var/lib/apt/lists/* \
  "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log

tar --numeric-owner --xattrs -C "$root" -cf - . | zstd -q -T0 -6 -o "$out.tmp"
mv "$out.tmp" "$out"
t2=$(date +%s)
echo "build_rootfs: $out ($(du -h "$out" | cut -f1)); debootstrap $((t1 - t0)) s, pack $((t2 - t1)) s" >&2
