#!/usr/bin/env bash
# The test command: installs what is needed, then type-checks, lints, and runs unit and
# integration tests (integration tests need root: real namespaces and eBPF). Every test runs:
# MEMBRANE_TEST_STRICT=1 makes a test whose requirement (root, clang) is missing fail instead
# of skipping (test/support/requirements.ts).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
echo "== typecheck"; node_modules/.bin/tsc -p tsconfig.json && node_modules/.bin/tsc -p ui/tsconfig.json
echo "== lint"; bin/node scripts/lint.ts
echo "== tests"
MEMBRANE_TEST_STRICT=1 bin/node --test --test-concurrency=1 --test-timeout=600000 "test/unit/**/*.test.ts" "test/integration/**/*.test.ts"
