#!/usr/bin/env bash
# Storm benchmark: netbird-ct against `conntrack -E`, in the same run, with the shared harness
# (../shared/bench/ct-storm.sh; see its README). As root:
#   deno task bench:storm                       # N=100000 UDP flows at full speed, then the flush
#   deno task bench:storm -n 100000 -p mixed    # any ct-storm.sh option is passed through
#   deno task bench:storm -n 100000 --v6
#   deno task bench:storm -n 1000000 -r 50000   # sustained rate
# Env: RUNS=3 repeats each pair; NBCT_ARGS="--rcvbuf 212992" adds netbird-ct options;
#      V8_FLAGS passes V8 flags to netbird-ct's Deno (default: the shipped --max-semi-space-size=4;
#      V8_FLAGS= runs with V8's defaults);
#      CT_STORM=path overrides the harness; RESULTS=file appends the RESULT lines.
# netbird-ct writes JSON lines to stdout, which the harness saves to a file and counts: only
# records taken from kernel events count (synthesized ones carry a trailing "reason" key).
# --dns-collection: the storm's destination ports include 5353 and 22054, which NetBird's DNS
# policy would otherwise (correctly, and counted) leave out.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
storm=${CT_STORM:-$root/../shared/bench/ct-storm.sh}
[[ -x $storm || -f $storm ]] || { echo "bench: harness not found: $storm (set CT_STORM)" >&2; exit 2; }
deno=$(bash "$root/scripts/setup.sh" test | tail -n1)
command -v gcc >/dev/null || { echo "bench: the harness compiles C helpers: apt-get install gcc" >&2; exit 2; }
runs=${RUNS:-1}
V8_FLAGS=${V8_FLAGS-"--max-semi-space-size=4"}
results=${RESULTS:-$(mktemp)}
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(-n 100000)

# A network namespace copies nf_conntrack_max when it is created (read-only inside it here), so a
# table bigger than the host's maximum must be allowed before the harness creates its namespaces.
n=10000
for ((i = 0; i < ${#args[@]}; i++)); do [[ ${args[i]} == -n ]] && n=${args[i + 1]}; done
orig_max=$(sysctl -n net.netfilter.nf_conntrack_max)
if ((n + 8192 > orig_max)); then
  sysctl -qw net.netfilter.nf_conntrack_max=$((n + 8192))
  trap 'sysctl -qw net.netfilter.nf_conntrack_max='"$orig_max" EXIT
  echo "bench: nf_conntrack_max raised $orig_max -> $((n + 8192)) for this run" >&2
fi

nbct=("$deno" run --quiet ${V8_FLAGS:+--v8-flags=$V8_FLAGS} --allow-ffi --allow-env=NETBIRD_CT_LIBNFCT --allow-sys=networkInterfaces
  --allow-read --allow-write "$root/main.ts" -n 100.64.0.0/10 -n fd00:64::/64 --dns-collection
  --log-level warning
  --stats-interval 0 ${NBCT_ARGS:-})

# Records taken from kernel events end with the rule_id key; synthesized ones end with a
# "reason" key and are not counted as received.
real_start='"type":"start".*"rule_id":(null|"[^"]*")\}$'
real_end='"type":"end".*"rule_id":(null|"[^"]*")\}$'

for ((i = 1; i <= runs; i++)); do
  echo "== run $i/$runs: netbird-ct ${NBCT_ARGS:-}" >&2
  bash "$storm" "${args[@]}" --label netbird-ct --results "$results" \
    --new-re "$real_start" --end-re "$real_end" -- "${nbct[@]}"
  echo "== run $i/$runs: conntrack -E" >&2
  bash "$storm" "${args[@]}" --label conntrack-E --results "$results" -- conntrack -E
done

echo "== summary (loss = 1 - (new+destroy)/(2*flows))"
awk '/^RESULT/ {
    label = ""; flows = 0; nw = 0; de = 0; cpu = 0
    for (i = 2; i <= NF; i++) {
      split($i, kv, "=")
      if (kv[1] == "label") label = kv[2]
      if (kv[1] == "flows") flows = kv[2]
      if (kv[1] == "new") nw = kv[2]
      if (kv[1] == "destroy") de = kv[2]
      if (kv[1] == "cpu_s") cpu = kv[2]
    }
    if (flows > 0) { n[label]++; got[label] += nw + de; want[label] += 2 * flows; c[label] += cpu }
  }
  END {
    for (l in n) {
      loss[l] = 100 * (1 - got[l] / want[l])
      printf "%-12s runs=%d events=%d/%d loss_pct=%.2f cpu_us_per_event=%.2f\n", l, n[l], got[l], want[l], loss[l], (got[l] > 0 ? 1e6 * c[l] / got[l] : 0)
    }
    if (("netbird-ct" in n) && ("conntrack-E" in n)) {
      printf "ratio: netbird-ct delivered %.2fx the events of conntrack -E\n", got["netbird-ct"] / (got["conntrack-E"] > 0 ? got["conntrack-E"] : 1)
    }
  }' "$results"
