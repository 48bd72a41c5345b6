#!/usr/bin/env bash
# Replay benchmark (bench/replay_rate.ts): `netbird-ct replay` packets/s and CPU seconds against
# `tshark -q -z conv,tcp` (and `softflowd -r`, when installed) over the same generated capture.
#   deno task bench:replay                          # 1,000,000 packets, 3 runs of each tool
#   deno task bench:replay --packets 200000 --runs 5
# Needs tshark and /usr/bin/time (apt-get install tshark time; softflowd optional). The capture
# lives in a temporary directory that is removed when the benchmark ends, even if Deno crashes.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deno=${DENO:-deno}
for tool in tshark /usr/bin/time "$deno"; do
  command -v "$tool" >/dev/null || {
    echo "bench: $tool not found (apt-get install tshark time; Deno: scripts/setup.sh)" >&2
    exit 2
  }
done
tmp=$(mktemp -d -t netbird-ct-bench-replay.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
TMPDIR=$tmp "$deno" run --allow-all "$root/bench/replay_rate.ts" "$@"
