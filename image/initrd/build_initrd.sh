#!/bin/bash
# Builds the assisted-bootloader initramfs (newc cpio):
#   build_initrd.sh OUT MODULES_DIR BOOTLOADER [BUNDLE_JS]
# BOOTLOADER is the `deno compile` binary, or the deno executable when BUNDLE_JS (the
# `deno bundle` output) is given. Content: static busybox (Debian busybox-static) and its
# applets, the bootloader, the shared libraries `ldd` lists (real files at the paths ldd
# prints), the NIC modules of MODULES_DIR (+ load-order), /init, /init-bootloader, /net-setup and
# the udhcpc script. COMPRESS=gzip|zstd|none (default: gzip). NICS=virtio (default: the
# virtio_net chain + e1000, loaded in a fixed order) or all (every Ethernet driver of the
# kernel package, loaded by device modalias: for real hardware).
# TARGET_ARCH=x86_64|aarch64 (default: this host) is checked against every binary copied in.
# SYSROOT=DIR builds for another architecture: busybox and the libraries come from DIR (the
# unpacked Debian packages of fetch_sysroot.sh), found with readelf instead of ldd; the
# foreign busybox cannot list its applets here, so /init links them at boot.
# CA_BUNDLE=PEM file: the initramfs's system trust store (/etc/ssl/certs/ca-certificates.crt),
# which the bootloader reads.
# KEXEC_TOOLS=PATH of kexec-tools' kexec (default: this host's; none with SYSROOT) or none: the
# fallback loader.
set -euo pipefail
# Whatever the build host's umask: the bootloader refuses a work directory or
# a config file on a path that users other than root may write.
umask 022
out=$1 modules=$2 bootloader=$3 bundle=${4:-}
compress=${COMPRESS:-gzip}
target=${TARGET_ARCH:-$(uname -m)}
sysroot=${SYSROOT:-}
here=$(dirname "$(readlink -f "$0")")
if [[ -n $sysroot ]]; then
  "$here/require_tools.sh" cpio:cpio readelf:binutils
  busybox=$sysroot/bin/busybox
else
  "$here/require_tools.sh" cpio:cpio ldd:libc-bin dpkg=busybox-static:busybox-static /bin/busybox:busybox-static
  busybox=/bin/busybox
fi
[[ $compress == zstd ]] && "$here/require_tools.sh" zstd:zstd

# ELF e_machine of each target: a binary of the wrong architecture would only fail at boot.
case $target in
  x86_64) machine=62 ;;
  aarch64) machine=183 ;;
  *) echo "error: TARGET_ARCH must be x86_64 or aarch64, not $target" >&2; exit 2 ;;
esac
check_machine() {
  local got
  got=$(od -An -tu2 -j18 -N2 "$1" | tr -d ' ')
  [[ $got == "$machine" ]] || {
    echo "error: $1 is not an ELF executable for $target (e_machine ${got:-none}, want $machine)" >&2
    exit 1
  }
}
check_machine "$busybox"
check_machine "$(readlink -f "$bootloader")"

mkdir -p "$(dirname "$out")"
root=$(mktemp -d "$(dirname "$out")/.root.XXXXXX")
trap 'rm -rf "$root" "$out.tmp.$$"' EXIT
mkdir -p "$root"/{bin,dev,etc,proc,sys,tmp,run,root,var/lib,var/cache,lib/modules/assisted,usr/share/udhcpc}
ln -s bin "$root/sbin"
ln -s ../bin "$root/usr/bin"
ln -s ../bin "$root/usr/sbin"
chmod 1777 "$root/tmp"

# busybox: `--list` names busybox itself; linking it would make /bin/busybox a loop (-40 on /init).
cp "$busybox" "$root/bin/busybox"
if [[ -n $sysroot ]]; then
  ln -s busybox "$root/bin/sh"
else
  for applet in $(/bin/busybox --list); do
    [[ $applet == busybox ]] && continue
    ln -s busybox "$root/bin/$applet"
  done
fi

# The real file behind PATH inside the sysroot (its links may be relative or absolute).
sysroot_file() {
  local path=$1 i
  for i in 1 2 3 4 5 6 7 8; do
    [[ -L $sysroot$path ]] || break
    local link
    link=$(readlink "$sysroot$path")
    [[ $link == /* ]] && path=$link || path=$(dirname "$path")/$link
  done
  [[ -f $sysroot$path ]] || { echo "error: $path is not in $sysroot" >&2; exit 1; }
  echo "$sysroot$path"
}

copy_libs_sysroot() {
  # Copies the interpreter and every library the foreign binary $1 needs (recursively) from
  # the sysroot, each to /lib/<multiarch>/ where the dynamic loader looks by default.
  local interp lib found dir f todo=("$1") seen=" "
  interp=$(readelf -l "$1" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
  [[ -n $interp ]] || return 0 # static
  mkdir -p "$root$(dirname "$interp")"
  cp "$(sysroot_file "$interp")" "$root$interp"
  while ((${#todo[@]} > 0)); do
    f=${todo[-1]}
    unset 'todo[-1]'
    for lib in $(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
      [[ $seen == *" $lib "* ]] && continue
      seen+="$lib "
      found=""
      for dir in "$sysroot"/lib/*-linux-gnu "$sysroot"/usr/lib/*-linux-gnu; do
        [[ -e $dir/$lib ]] && { found=$dir/$lib; break; }
      done
      [[ -n $found ]] || { echo "error: $lib (needed by $(basename "$f")) is not in $sysroot" >&2; exit 1; }
      dir=/lib/$(basename "$(dirname "$found")")
      mkdir -p "$root$dir"
      cp "$(sysroot_file "${found#"$sysroot"}")" "$root$dir/$lib"
      todo+=("$root$dir/$lib")
    done
  done
}

copy_libs() {
  # Copies every library the dynamic binary $1 loads, real files at the paths ldd prints.
  local line path
  if [[ -n $sysroot ]]; then
    copy_libs_sysroot "$1"
    return
  fi
  ldd "$1" >/dev/null 2>&1 || return 0 # static
  while read -r line; do
    case $line in
      *"=> /"*) path=${line#*=> } path=${path%% (*} ;;
      /*) path=${line%% (*} ;;
      *) continue ;;
    esac
    mkdir -p "$root$(dirname "$path")"
    cp "$(readlink -f "$path")" "$root$path"
  done < <(ldd "$1")
}

if [[ -n $bundle ]]; then
  cp "$(readlink -f "$bootloader")" "$root/bin/deno"
  mkdir -p "$root/opt/assisted-bootloader"
  cp "$bundle" "$root/opt/assisted-bootloader/assisted-bootloader.js"
  copy_libs "$root/bin/deno"
else
  cp "$(readlink -f "$bootloader")" "$root/bin/assisted-bootloader"
  copy_libs "$root/bin/assisted-bootloader"
fi
# Deno.dlopen("libc.so.6") and friends resolve through the default search path (a cross
# build copied libc with the binary's own libraries already).
[[ $target == aarch64 ]] && abi=AArch64 || abi=x86-64
for lib in libc.so.6; do
  [[ -n $sysroot ]] && break
  path=$(ldconfig -p | awk -v l="$lib" -v abi="$abi" '$1 == l && index($0, abi) && !found {print $NF; found = 1}')
  [[ -n $path && ! -e $root$path ]] && { mkdir -p "$root$(dirname "$path")"; cp "$(readlink -f "$path")" "$root$path"; }
done

# kexec-tools' kexec and its libraries: the bootloader's fallback when kexec_file_load cannot
# take a kernel (ENOSYS, ENOEXEC).
# A cross build has none unless KEXEC_TOOLS names one for the target.
if [[ -n $sysroot ]]; then
  kexec_bin=${KEXEC_TOOLS:-none}
else
  kexec_bin=${KEXEC_TOOLS:-$(command -v kexec || echo /sbin/kexec)}
fi
if [[ $kexec_bin != none ]]; then
  [[ -n ${KEXEC_TOOLS:-} ]] || "$here/require_tools.sh" "$kexec_bin:kexec-tools"
  check_machine "$(readlink -f "$kexec_bin")"
  cp "$(readlink -f "$kexec_bin")" "$root/bin/kexec"
  copy_libs "$root/bin/kexec"
fi

cp "$modules"/*.ko "$modules/load-order" "$root/lib/modules/assisted/"
if [[ ${NICS:-virtio} == all ]]; then
  # Every Ethernet driver with modules.dep/alias (fetch_kernel.sh builds MODULES_DIR/../nic-modules).
  tree=$(dirname "$modules")/nic-modules/lib/modules
  [[ -d $tree ]] || { echo "error: $tree is missing (needs kmod when fetching the kernel)" >&2; exit 1; }
  cp -a "$tree" "$root/lib/"
elif [[ ${NICS:-virtio} != virtio ]]; then
  echo "error: NICS must be virtio or all, not $NICS" >&2
  exit 2
fi
install -m 0755 "$here/init" "$root/init"
install -m 0755 "$here/init-bootloader" "$root/init-bootloader"
install -m 0755 "$here/net-setup" "$root/net-setup"
install -m 0755 "$here/udhcpc.script" "$root/usr/share/udhcpc/default.script"
# A private CA for the bootloader: the initramfs's system store (it has none otherwise; Deno's
# built-in roots cover public CAs).
if [[ -n ${CA_BUNDLE:-} ]]; then
  grep -q -- '-----BEGIN CERTIFICATE-----' "$CA_BUNDLE" 2>/dev/null ||
    { echo "error: CA_BUNDLE=$CA_BUNDLE is not a readable PEM certificate file" >&2; exit 2; }
  install -D -m 0644 "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
fi
echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"
: >"$root/etc/resolv.conf"
# The kernel opens /dev/console before /init runs; /init reopens it after mounting devtmpfs.
mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true

case $compress in
  gzip) filter=(gzip -1 -n) ;;
  zstd) filter=(zstd -q -T0 -3) ;;
  none) filter=(cat) ;;
  *) echo "error: COMPRESS must be gzip, zstd or none, not $compress" >&2; exit 2 ;;
esac
(cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
  cpio --null -o -H newc --reproducible -R 0:0 --quiet) | "${filter[@]}" >"$out.tmp.$$"
mv "$out.tmp.$$" "$out"
echo "initrd: $out ($(du -h "$out" | cut -f1), $compress)" >&2
