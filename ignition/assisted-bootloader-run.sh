#!/bin/bash
# assisted-bootloader-run: download the assisted-bootloader binary, check its
# sha256 BEFORE anything runs it, install it, and exec it with its config.
# Installed by the Ignition config as /usr/local/bin/assisted-bootloader-run and
# started by assisted-bootloader.service (environment: /etc/assisted-bootloader/download.env).
#
# Environment:
#   BOOTLOADER_URL       http(s) URL of the binary (required)
#   BOOTLOADER_SHA256    its sha256, 64 hex digits (required)
#   BOOTLOADER_BIN       install path (default /usr/local/bin/assisted-bootloader)
#   BOOTLOADER_CONFIG    config file passed with --config (default /etc/assisted-bootloader/config.env)
#   BOOTLOADER_CA_CERT   extra CA bundle for the download (optional)
#   BOOTLOADER_ATTEMPTS  download attempts (default 10), BOOTLOADER_RETRY_DELAY first delay in s (default 2)
#   BOOTLOADER_STALL_SECONDS  a download slower than 1 KiB/s for this long is cut and retried (default 60)
#   STATE_DIRECTORY      download directory (set by systemd; default /var/lib/assisted-bootloader)
#   HTTP_PROXY, HTTPS_PROXY, NO_PROXY (and lower case: curl reads http_proxy only) for curl and
#                        the bootloader (docs/networks.md)
# Exit codes: 2 bad configuration, 5 download failed, 6 sha256 mismatch; otherwise the bootloader's.
set -euo pipefail

me=assisted-bootloader-run
die() { # code message
  echo "$me: error: $2" >&2
  exit "$1"
}

url=${BOOTLOADER_URL:-}
sha=${BOOTLOADER_SHA256:-}
bin=${BOOTLOADER_BIN:-/usr/local/bin/assisted-bootloader}
config=${BOOTLOADER_CONFIG:-/etc/assisted-bootloader/config.env}
state=${STATE_DIRECTORY:-/var/lib/assisted-bootloader}
attempts=${BOOTLOADER_ATTEMPTS:-10}
delay=${BOOTLOADER_RETRY_DELAY:-2}
stall=${BOOTLOADER_STALL_SECONDS:-60}

[[ -n $url ]] || die 2 "BOOTLOADER_URL is not set"
[[ $url =~ ^https?://[^/?#[:space:]]+ ]] || die 2 "BOOTLOADER_URL is not an http(s) URL"
sha=${sha,,}
[[ $sha =~ ^[0-9a-f]{64}$ ]] || die 2 "BOOTLOADER_SHA256 must be 64 hex digits"
[[ $attempts =~ ^[1-9][0-9]*$ ]] || die 2 "BOOTLOADER_ATTEMPTS must be a positive integer"
[[ $delay =~ ^[0-9]+$ ]] || die 2 "BOOTLOADER_RETRY_DELAY must be a whole number of seconds"
[[ $stall =~ ^[1-9][0-9]*$ ]] || die 2 "BOOTLOADER_STALL_SECONDS must be a positive whole number"
[[ -r $config ]] || die 2 "the bootloader config $config is missing"
shown=${url%%[?#]*} # never log a query string: it may carry a token
# The unit's proxy (download.env) serves curl here and the bootloader; never log its password.
for v in HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  if [[ -n ${!v:-} ]]; then echo "$me: $v=$(sed 's|//[^@/]*@|//***@|' <<<"${!v}")"; fi
done

sha_of() { sha256sum -- "$1" | cut -d' ' -f1; }

if [[ -x $bin && $(sha_of "$bin") == "$sha" ]]; then
  echo "$me: $bin already installed with sha256 $sha"
else
  umask 077
  mkdir -p -- "$state"
  tmp=$state/assisted-bootloader.download
  rm -f -- "$tmp"
  trap 'rm -f -- "$tmp"' EXIT
  # A stalled server must not hold the unit until TimeoutStartSec: cut it and retry.
  curl_args=(--fail --silent --show-error --location --connect-timeout 30
    --speed-limit 1024 --speed-time "$stall" --output "$tmp")
  if [[ -n ${BOOTLOADER_CA_CERT:-} ]]; then curl_args+=(--cacert "$BOOTLOADER_CA_CERT"); fi
  n=1
  until curl "${curl_args[@]}" -- "$url"; do
    if ((n >= attempts)); then die 5 "cannot download $shown after $attempts attempts"; fi
    echo "$me: download of $shown failed (attempt $n of $attempts), retrying in ${delay}s" >&2
    sleep "$delay"
    n=$((n + 1))
    delay=$((delay * 2 > 60 ? 60 : delay * 2))
  done
  got=$(sha_of "$tmp")
  if [[ $got != "$sha" ]]; then
    die 6 "sha256 mismatch for $shown: expected $sha, got $got; refusing to run it"
  fi
  mkdir -p -- "$(dirname -- "$bin")"
  # install, not mv: a fresh file gets the SELinux label of its directory.
  install -m 0755 -- "$tmp" "$bin"
  rm -f -- "$tmp"
  trap - EXIT
  # Check what will actually run, not only what was downloaded.
  got=$(sha_of "$bin")
  [[ $got == "$sha" ]] || die 6 "sha256 mismatch for installed $bin: expected $sha, got $got; refusing to run it"
  echo "$me: installed $bin (sha256 $sha) from $shown"
fi

echo "$me: running $bin --config $config"
exec "$bin" --config "$config"
