#!/usr/bin/env bash
# The test command: installs what is needed, then runs the unit tests, then the integration
# tests (they need root: real namespaces and eBPF) with the type-check and the lint beside them
# (their output follows the integration tests'; either failing fails the command). Every test runs:
# MEMBRANE_TEST_STRICT=1 makes a test whose requirement (root, clang) is missing fail instead
# of skipping (test/support/requirements.ts).
#
# Two test files run at once: most of an integration file's time is spent waiting (namespaces,
# agents starting, timeouts), not computing, and the machine the suite is held to has two cores.
# Integration files can share the machine because each names what it makes after its own
# process: lab names and state dirs (TestLab `<prefix><pid>`), namespaces, /sys/fs/bpf pins
# (`mdp-<prefix><pid>`), host-mode pod CIDRs (one /24 per file), podman storage (per test dir),
# loopback ports (any free one, or offset by the pid; the lab Relay takes any free port when
# 4245 is taken). node --test starts files in path order, the next as soon as a slot is free,
# and prints each file's results whole, in path order. A file that measures latency against
# itself runs alone afterwards (SERIAL). The exit status is non-zero when any test failed; each
# group lists its failing tests at its end.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh

# Compares first-event delivery of two paths within 1 ms (median): alone, as a benchmark would.
SERIAL=(e2e/ai-intercept)

declare -A serial=()
for f in "${SERIAL[@]}"; do serial["test/integration/$f.test.ts"]=1; done
parallel=(); alone=()
while IFS= read -r f; do if [[ -n ${serial[$f]:-} ]]; then alone+=("$f"); else parallel+=("$f"); fi; done < <(find test/integration -name '*.test.ts' | sort)

export MEMBRANE_TEST_STRICT=1
failed=()
run() { # name, then node --test arguments
  local name=$1; shift
  echo "== tests: $name"
  local t0=$SECONDS
  if bin/node --test --test-timeout=600000 "$@"; then echo "== $name: passed ($((SECONDS - t0)) s)"; else echo "== $name: FAILED ($((SECONDS - t0)) s)"; failed+=("$name"); fi
}
run unit --test-concurrency=2 "test/unit/**/*.test.ts"
# The typecheck and the lint run beside the integration files (which mostly wait); their output
# is printed after them, and either failing fails the command as before.
checks_log="$(mktemp)"
trap 'rm -f "$checks_log"' EXIT
( set +e
  echo "== typecheck"; node_modules/.bin/tsc -p tsconfig.json && node_modules/.bin/tsc -p ui/tsconfig.json; typecheck=$?
  ((typecheck)) || echo "typecheck: ok"
  echo "== lint"; bin/node scripts/lint.ts; lint=$?
  exit $((typecheck || lint)) ) > "$checks_log" 2>&1 &
checks=$!
run integration --test-concurrency=2 "${parallel[@]}"
if wait "$checks"; then cat "$checks_log"; else cat "$checks_log"; echo "== typecheck or lint FAILED"; failed+=("typecheck/lint"); fi
# never with an empty list: node --test without files would look for tests everywhere
((${#alone[@]} == 0)) || run "integration, alone" --test-concurrency=1 "${alone[@]}"
if ((${#failed[@]})); then echo "== tests FAILED in: ${failed[*]} (the failing tests are listed at the end of each)"; exit 1; fi
echo "== tests: all passed"
