#!/usr/bin/env bash
# Installs what netbird-ct needs, idempotently (as root, on Debian/Ubuntu with Node/npm):
#   scripts/setup.sh run    Deno 2.9.6 (from npm) + libnetfilter-conntrack3 + libnetfilter-log1 + npm dependencies
#   scripts/setup.sh test   the above + conntrack, nftables, iproute2, iputils-ping, util-linux,
#                           redis-server, redis-tools, python3-grpcio, python3-grpc-tools, openssl
#                           (Flow API tests), nfdump, tshark (IPFIX tests)
# Prints the path of the deno binary on its last line.
set -euo pipefail

DENO_VERSION=2.9.6
mode=${1:-run}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

pkgs=(libnetfilter-conntrack3 libnfnetlink0 libnetfilter-log1)
if [[ $mode == test ]]; then
  pkgs+=(conntrack nftables iproute2 iputils-ping util-linux redis-server redis-tools python3-grpcio
    python3-grpc-tools openssl nfdump tshark)
elif [[ $mode != run ]]; then
  echo "usage: scripts/setup.sh run|test" >&2
  exit 2
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root, or: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

deno_bin() {
  local d
  for d in "$(command -v deno 2>/dev/null || true)" "$(npm prefix -g 2>/dev/null)/bin/deno"; do
    if [[ -n $d && -x $d ]] && "$d" --version 2>/dev/null | head -n1 | grep -q "^deno $DENO_VERSION "; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

if ! deno=$(deno_bin); then
  echo "setup: installing deno@$DENO_VERSION from npm" >&2
  npm install -g --no-fund --no-audit "deno@$DENO_VERSION" >&2
  deno=$(deno_bin) || { echo "setup: deno $DENO_VERSION not found after npm install" >&2; exit 1; }
fi

# npm dependencies (LogTape) into node_modules/, exactly as pinned by deno.lock.
(cd "$root" && "$deno" install --frozen --quiet >&2)
echo "$deno"
