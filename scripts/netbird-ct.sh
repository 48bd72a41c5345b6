#!/usr/bin/env bash
# Runs netbird-ct from this checkout, installing what is missing first (see scripts/setup.sh).
#   scripts/netbird-ct.sh [netbird-ct options]     e.g. scripts/netbird-ct.sh -n 100.64.0.0/10 --counters
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deno=$(bash "$root/scripts/setup.sh" run | tail -n1)
# --allow-ffi is what the tracker needs (libnetfilter_conntrack, and /proc through libc); the rest:
# environment (NETBIRD_CT_LIBNFCT, NB_FLOW_TOKEN, gRPC settings), interface addresses, the --routes
# and --output files, and the network for --flow-url, --ipfix and "collect".
# --max-semi-space-size=4: V8's young generation capped at 4 MB instead of growing to 32 MB under a
# storm; the shipped binary (deno task compile) has the same flag built in. See README, "Memory".
exec "$deno" run --quiet --v8-flags=--max-semi-space-size=4 --allow-ffi --allow-env --allow-sys=networkInterfaces --allow-read --allow-net \
  --allow-write "$root/main.ts" "$@"
