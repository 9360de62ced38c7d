#!/bin/bash
# Downloads one Debian package into a cache, checked against the SHA256 apt knows:
#   fetch_deb.sh CACHE_DIR PACKAGE[:ARCH]
#   fetch_deb.sh --ensure-arch ARCH      (only the architecture step below)
# Prints one line: "DEB_PATH VERSION SHA256". A cached .deb with the right SHA256 is
# reused. A foreign ARCH (arm64 on an amd64 host) is added to dpkg's architectures when
# running as root (`dpkg --add-architecture`; nothing foreign is installed: callers only
# `dpkg-deb -x` the package), and apt's lists are updated once when they lack the package.
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
"$here/require_tools.sh" apt-get:apt dpkg-deb:dpkg sha256sum:coreutils flock:util-linux >&2

ensure_arch() {
  local arch=$1
  [[ -z $arch || $arch == "$(dpkg --print-architecture)" ]] && return 0
  dpkg --print-foreign-architectures | grep -qx "$arch" && return 0
  if [[ $(id -u) != 0 ]]; then
    echo "error: apt does not know the $arch architecture; as root: dpkg --add-architecture $arch && apt-get update" >&2
    exit 1
  fi
  echo "adding the $arch architecture to dpkg (dpkg --add-architecture $arch)" >&2
  dpkg --add-architecture "$arch"
  apt-get update -qq >&2 || true
}
if [[ $1 == --ensure-arch ]]; then
  ensure_arch "$2"
  exit 0
fi

cache=$1 spec=$2
mkdir -p "$cache"
arch=""
[[ $spec == *:* ]] && arch=${spec#*:}
ensure_arch "$arch"

# One apt-get at a time per cache (parallel builds share build/).
exec 9>"$cache/.lock"
flock 9

show() { apt-cache show --no-all-versions "$spec" 2>/dev/null || true; }
info=$(show)
if [[ $info != *$'\nSHA256: '* && $(id -u) == 0 ]]; then
  # A fresh machine (or a just added architecture) may have no package lists yet.
  echo "apt has no metadata for $spec: running apt-get update" >&2
  apt-get update -qq >&2 || true
  info=$(show)
fi
version=$(awk '/^Version:/ {print $2; exit}' <<<"$info")
sha=$(awk '/^SHA256:/ {print $2; exit}' <<<"$info")
file=$(awk '/^Filename:/ {print $2; exit}' <<<"$info")
if [[ -z $version || -z $sha || -z $file ]]; then
  echo "error: apt knows no package $spec (run apt-get update)" >&2
  exit 1
fi
deb=$cache/$(basename "$file")
if [[ ! -f $deb ]] || [[ $(sha256sum "$deb" | cut -d' ' -f1) != "$sha" ]]; then
  echo "downloading $spec $version" >&2
  rm -f "$deb"
  # apt-get download names the file after the version (epoch escaped): fetch alone, then rename.
  tmp=$(mktemp -d "$cache/.download.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$spec=$version" >&2)
  got=$(sha256sum "$tmp"/*.deb | cut -d' ' -f1)
  [[ $got == "$sha" ]] || {
    echo "error: $spec $version has SHA256 $got, apt expects $sha" >&2
    exit 1
  }
  mv "$tmp"/*.deb "$deb"
fi
echo "$deb $version $sha"
