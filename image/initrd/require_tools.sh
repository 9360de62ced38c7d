#!/bin/bash
# Ensures host tools exist: require_tools.sh [--packages FILE] TOOL:DEBIAN_PACKAGE ...
# A tool is a command name, a file path (starting with /), or dpkg=NAME (the Debian
# package itself must be installed). --packages FILE adds every package of FILE (one a
# line, `#` comments; a bare NAME means dpkg=NAME:NAME, a TOOL:PACKAGE line is taken as is).
# Missing tools are installed with apt-get when running as root on a system that has it
# (unless INSTALL_PACKAGES=0); otherwise one line names the Debian packages to install,
# and the script exits 1.
set -euo pipefail
specs=()
while (($#)); do
  if [[ $1 == --packages ]]; then
    [[ -r ${2:-} ]] || { echo "error: require_tools.sh: cannot read the package list ${2:-}" >&2; exit 1; }
    while read -r line || [[ -n $line ]]; do
      line=${line%%#*}
      line=${line//[[:space:]]/}
      [[ -z $line ]] && continue
      if [[ $line == *:* ]]; then specs+=("$line"); else specs+=("dpkg=$line:$line"); fi
    done <"$2"
    shift 2
  else
    specs+=("$1")
    shift
  fi
done
missing_pkgs=()
for spec in ${specs[@]+"${specs[@]}"}; do
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
if [[ ${INSTALL_PACKAGES:-1} != 0 && $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing missing host packages: ${missing_pkgs[*]}" >&2
  install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing_pkgs[@]}" >&2; }
  # A fresh machine may have no package lists yet: update once, then try again.
  install || { apt-get update -q >&2 && install; } ||
    { echo "error: apt-get install ${missing_pkgs[*]} failed" >&2; exit 1; }
  exit 0
fi
echo "error: missing host tools; install the Debian packages: ${missing_pkgs[*]}" \
  "(as root: apt-get install --no-install-recommends ${missing_pkgs[*]})" >&2
exit 1
