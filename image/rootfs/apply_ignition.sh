#!/usr/bin/env bash
# Applies an Ignition config to a copy of the chain-test rootfs with Debian's
# real `ignition` binary, then packs the result into an ext4 disk image.
#
# usage: apply_ignition.sh ROOTFS.tar.zst CONFIG.ign OUT.ext4 [DENO_BINARY]
#
# What FCOS's initramfs runs (ignition-fetch-offline.service, then
# ignition-files.service once /sysroot is mounted), with the root being a
# directory instead of /sysroot:
#   IGNITION_CONFIG_FILE=CONFIG.ign ignition -platform file -stage fetch-offline \
#     -root DIR -config-cache WORK/ignition.json -state-file WORK/state \
#     -neednet WORK/neednet -log-to-stdout
#   IGNITION_CONFIG_FILE=CONFIG.ign ignition -platform file -stage files \
#     -root DIR -config-cache WORK/ignition.json -state-file WORK/state \
#     -neednet WORK/neednet -log-to-stdout
# The `file` platform reads the config from $IGNITION_CONFIG_FILE (FCOS's
# metal platform reads /usr/lib/ignition/user.ign instead: same stages).
# A config with remote sources would need the network at this point (Ignition
# writes the neednet flag): that is refused here, the test applies it offline.
#
# SELinux: Debian's Ignition is built with relabel support, so its files stage
# reads ROOT/etc/selinux/config (the rootfs ships one with SELINUX=disabled) and
# runs `setfiles` on what it wrote, as FCOS's initramfs does. A Debian rootfs has
# no policy to label with, so a host-side `setfiles` stand-in records the list
# of paths (OUT.relabel) and changes nothing.
#
# DENO_BINARY (optional) is copied to /usr/local/lib/deno/deno, behind the
# /usr/local/bin/deno wrapper of guest/: the chain test's "binary" is the
# bootloader bundle with a `#!/usr/bin/env -S deno run -A` line.
set -euo pipefail

usage="usage: apply_ignition.sh ROOTFS.tar.zst CONFIG.ign OUT.ext4 [DENO_BINARY]"
rootfs=${1:?$usage}
config=${2:?$usage}
out=${3:?$usage}
deno=${4:-}
die() { echo "apply_ignition: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (the rootfs keeps root-owned files and device nodes)"
IGNITION=${IGNITION:-$(command -v ignition 2>/dev/null ||
  echo /usr/lib/dracut/modules.d/30ignition/ignition)}
[ -x "$IGNITION" ] || die "the ignition binary is missing (Debian package: ignition)"
command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 is missing (Debian package: e2fsprogs)"
[ -f "$rootfs" ] || die "no rootfs tarball $rootfs"
[ -f "$config" ] || die "no Ignition config $config"
config=$(readlink -f "$config")
rootfs=$(readlink -f "$rootfs") # zstd skips symbolic links
mkdir -p "$(dirname "$out")"
out=$(readlink -f "$out")
rm -f "$out" "$out.ignition.log" "$out.relabel"

work=$(mktemp -d "$(dirname "$out")/ignition-work.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root" "$work/bin"

ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%d' $((($2 - $1) / 1000)) $(((($2 - $1) % 1000) / 100)); }
t0=$(ms)
zstd -q -dc "$rootfs" | tar --numeric-owner --xattrs -x -C "$root"
if [ -n "$deno" ]; then
  install -D -m 0755 "$deno" "$root/usr/local/lib/deno/deno"
fi
t1=$(ms)

cat >"$work/bin/setfiles" <<SH
#!/bin/sh
# stand-in for SELinux setfiles (see apply_ignition.sh): record, change nothing
tr '\\0' '\\n' | sed "s|^$root||" >"$out.relabel"
SH
chmod 755 "$work/bin/setfiles"
for stage in fetch-offline files; do
  (cd "$work" && PATH="$work/bin:$PATH" IGNITION_CONFIG_FILE="$config" "$IGNITION" \
    -platform file -stage "$stage" -root "$root" -config-cache "$work/ignition.json" \
    -state-file "$work/state" -neednet "$work/neednet" -log-to-stdout) \
    >>"$out.ignition.log" 2>&1 || {
    grep -E 'CRITICAL|ERROR' "$out.ignition.log" >&2 || tail -n 20 "$out.ignition.log" >&2
    die "ignition stage $stage failed (log: $out.ignition.log)"
  }
  [ ! -e "$work/neednet" ] || die "the config has remote sources: Ignition needs the network, this test applies it offline"
done
t2=$(ms)

# Free space for the bootloader's downloads (kernel + initrds) and Deno's cache.
size_mb=$(($(du -sm "$root" | cut -f1) * 12 / 10 + 512))
truncate -s "${size_mb}M" "$out" # sparse; mkfs then does not announce a new file
mkfs.ext4 -q -F -L chain-root -d "$root" "$out" ||
  die "mkfs.ext4 -d failed"
t3=$(ms)
echo "apply_ignition: $out ($size_mb MiB): unpack $(secs "$t0" "$t1") s, ignition $(secs "$t1" "$t2") s, mkfs.ext4 $(secs "$t2" "$t3") s" >&2
