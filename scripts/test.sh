#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Node/npm, as root:
#   bash scripts/test.sh
# Installs what is missing (scripts/setup.sh test), then: format, lint, type check, unit tests
# (mocked FFI), JSR publish dry run, the bundled single-file build, and the real-kernel
# integration tests (network namespaces; root only).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export NO_COLOR=1
deno=$(bash scripts/setup.sh test | tail -n1)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

step() { echo "== $*"; }

step "deno fmt --check"; "$deno" fmt --check
step "deno lint"; "$deno" lint
step "deno check"; "$deno" task --quiet check
step "deno doc --lint"; "$deno" doc --lint lib/mod.ts ffi/mod.ts lib/flowapi/mod.ts lib/capture/mod.ts lib/userspace/mod.ts
step "unit tests (mocked FFI)"; "$deno" task --quiet test 2>&1 | tee -a "$log"
step "deno publish --dry-run"; "$deno" publish --dry-run --allow-dirty --quiet
step "bundle"; "$deno" task --quiet bundle
version=$("$deno" run --allow-ffi --allow-env=NETBIRD_CT_LIBNFCT dist/netbird-ct.js --version)
echo "$version"
[[ $version == "netbird-ct $(sed -n 's/.*"version": "\(.*\)".*/\1/p' deno.json)" ]] || {
  echo "bundle: unexpected --version output: $version" >&2
  exit 1
}
if [[ $(id -u) -ne 0 ]]; then
  echo "integration tests need root (network namespaces, conntrack): run as root" >&2
  exit 1
fi
step "integration tests (real kernel)"; "$deno" task --quiet test:kernel 2>&1 | tee -a "$log"

# One closing line for the whole run, summed over the deno test summaries above.
awk -F' [|] ' '/^(ok|FAILED) [|] [0-9]+ passed/ { split($2, p, " "); split($3, f, " "); P += p[1]; F += f[1] }
  END { printf "tests: %d passed, %d failed\n", P, F }' "$log"
