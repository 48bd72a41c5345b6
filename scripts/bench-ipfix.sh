#!/usr/bin/env bash
# IPFIX storm benchmark: netbird-ct exports a conntrack storm over UDP to a local nfcapd, and
# nfdump's flow count is compared with the tracker's end records. As root:
#   deno task bench:ipfix                  # N=100000 UDP flows at full speed, then the flush
#   deno task bench:ipfix -n 100000 -p mixed
# The harness (../shared/bench/ct-storm.sh) runs the tracker command inside its namespace, so
# nfcapd is started by the same command, next to netbird-ct, on 127.0.0.1 of that namespace.
# Env: CT_STORM=path overrides the harness; RUNS=N repeats.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
storm=${CT_STORM:-$root/../shared/bench/ct-storm.sh}
[[ -f $storm ]] || { echo "bench: harness not found: $storm (set CT_STORM)" >&2; exit 2; }
deno=$(bash "$root/scripts/setup.sh" test | tail -n1)
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(-n 100000)
runs=${RUNS:-1}
work=$(mktemp -d)
trap '[[ -n ${KEEP:-} ]] || rm -rf "$work"' EXIT

# The tracker command: nfcapd (64 MiB socket buffer) in the background, netbird-ct in front.
cat > "$work/tracker.sh" <<SH
#!/usr/bin/env bash
nfcapd -w "$work/flows" -p 4739 -b 127.0.0.1 -B 67108864 -t 3600 2> "$work/nfcapd.log" &
nf=\$!
trap 'kill -INT \$nf 2>/dev/null; wait \$nf' EXIT
sleep 0.5
"$deno" run --quiet --allow-all "$root/main.ts" -n 100.64.0.0/10 -n fd00:64::/64 --dns-collection \\
  --counters --log-level warning --stats-interval 0 --ipfix 127.0.0.1:4739 --ipfix-sequence nfdump \\
  2> "$work/tracker.err" &
tr=\$!
trap 'kill -INT \$tr 2>/dev/null; wait \$tr; kill -INT \$nf 2>/dev/null; wait \$nf' INT TERM
wait \$tr
SH
chmod +x "$work/tracker.sh"

for ((i = 1; i <= runs; i++)); do
  rm -rf "$work/flows" && mkdir -p "$work/flows"
  bash "$storm" "${args[@]}" --label netbird-ct-ipfix --keep \
    --new-re '"type":"start"' --end-re '"type":"end"' -- bash "$work/tracker.sh" | tee "$work/result"
  sleep 1
  ends=$(sed -n 's/.* destroy=\([0-9]*\) .*/\1/p' "$work/result")
  flows=$(nfdump -R "$work/flows" -q -o 'fmt:%pr' 2>/dev/null | wc -l)
  seqfail=$(nfdump -R "$work/flows" -I 2>/dev/null | sed -n 's/^Sequence failures: *//p' | head -1)
  summary=$(grep -o 'ipfix_records=[0-9]* .*ipfix0_connected=[0-9]' "$work/tracker.err" | tail -1 || true)
  echo "IPFIX run $i: tracker end records=$ends nfdump flows=$flows sequence_failures=${seqfail:-?} ${summary}"
done
