#!/usr/bin/env bash
# Flow API receiver benchmark (bench/collect_rate.ts): `netbird-ct collect` events/s with the memory
# store and with the Redis store, against redis-benchmark on the same throwaway redis-server.
#   deno task bench:collect                       # 300000 events per store, 4 streams, window 1000
#   deno task bench:collect --events 200000 --streams 8 --window 500
#   deno task bench:collect --generator grpc-js   # load from @grpc/grpc-js instead of raw HTTP/2
#   deno task bench:collect --profile /tmp/prof   # + V8 CPU profile of each receiver's load phase
# Needs redis-server and redis-tools (no root). The benchmark runs in its own process group and
# temporary directory: whatever it started (receivers, redis-server, the load generator) is killed
# and whatever it wrote is removed when it ends, even if Deno itself crashes.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deno=${DENO:-deno}
for tool in redis-server redis-benchmark redis-cli "$deno"; do
  command -v "$tool" >/dev/null || {
    echo "bench: $tool not found (apt-get install redis-server redis-tools; Deno: scripts/setup.sh)" >&2
    exit 2
  }
done
tmp=$(mktemp -d -t netbird-ct-bench-collect.XXXXXX)
pid=
finish() {
  # Anything left in the benchmark's process group (after a crash of the benchmark itself).
  [[ -z $pid ]] || kill -KILL -- "-$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap finish EXIT
trap '[[ -z $pid ]] || kill -TERM "$pid" 2>/dev/null || true' INT TERM
set -m # the benchmark gets its own process group (pgid = its pid)
TMPDIR=$tmp "$deno" run --allow-all "$root/bench/collect_rate.ts" "$@" &
pid=$!
set +m
rc=0
wait "$pid" || rc=$?
# A trapped signal interrupts wait: wait for the benchmark's own cleanup and exit.
while kill -0 "$pid" 2>/dev/null; do wait "$pid" || rc=$?; done
exit "$rc"
