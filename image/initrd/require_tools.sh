#!/bin/bash
# Ensures host tools exist: require_tools.sh TOOL:DEBIAN_PACKAGE ...
# A tool is a command name, or a file path (starting with /). Missing tools are
# installed with apt-get when running as root on a system that has it; otherwise
# one line names the Debian packages to install, and the script exits 1.
set -euo pipefail
missing_pkgs=()
for spec in "$@"; do
  tool=${spec%%:*}
  pkg=${spec#*:}
  if [[ $tool == /* ]]; then
    [[ -e $tool ]] && continue
  elif [[ $tool == dpkg=* ]]; then
    # dpkg=NAME: the Debian package itself must be installed (e.g. busybox-static, not busybox).
    [[ $(dpkg-query -W -f='${Status}' "${tool#dpkg=}" 2>/dev/null) == "install ok installed" ]] && continue
  else
    command -v "$tool" >/dev/null 2>&1 && continue
  fi
  missing_pkgs+=("$pkg")
done
((${#missing_pkgs[@]} == 0)) && exit 0
mapfile -t missing_pkgs < <(printf '%s\n' "${missing_pkgs[@]}" | sort -u)
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing missing host packages: ${missing_pkgs[*]}" >&2
  install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing_pkgs[@]}" >&2; }
  # A fresh machine may have no package lists yet: update once, then try again.
  install || { apt-get update -q >&2 && install; } ||
    { echo "error: apt-get install ${missing_pkgs[*]} failed" >&2; exit 1; }
  exit 0
fi
echo "error: missing host tools; install the Debian packages: ${missing_pkgs[*]} (apt-get install ${missing_pkgs[*]})" >&2
exit 1
