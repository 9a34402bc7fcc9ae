#!/usr/bin/env bash
# The Python suites (called from scripts/test.sh run_extra_suites, after the workspace build):
#   1. tests/sdk (pytest): the official azure-mgmt-containerinstance SDK against a real
#      `skiff server` over TLS with tokens;
#   2. tests/sdk/fuzz.py: a bounded schemathesis run against a real server with auth, inside a
#      network namespace with only loopback (fuzzed image names must never reach a registry),
#      then a store consistency check (list, daemon restart, list).
# Versions are pinned in tests/sdk/requirements.txt. The venv is kept in $SKIFF_VENV
# (default <repo>/.venv) and reused when the requirements did not change.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${SKIFF_VENV:-$ROOT/.venv}
REQ=tests/sdk/requirements.txt
export SKIFF_BIN=${SKIFF_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/skiff}
[ -x "$SKIFF_BIN" ] || { echo "sdk-suites: $SKIFF_BIN is missing (cargo build -p skiff)" >&2; exit 1; }

if ! cmp -s "$REQ" "$VENV/.requirements" 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$VENV/.requirements"
fi

status=0
echo "--- pytest tests/sdk"
rc=0
"$VENV/bin/pytest" -q -p no:cacheprovider tests/sdk || rc=$?
# pytest exits 5 when it collected nothing: that is a broken suite here, not a pass.
if [ "$rc" = 5 ]; then echo "sdk-suites: pytest collected no tests" >&2; fi
[ "$rc" = 0 ] || status=$rc

echo "--- schemathesis (bounded) in a loopback-only network namespace"
NS="skiff-fuzz-$$"
cleanup_ns() { ip netns del "$NS" 2>/dev/null || true; }
trap cleanup_ns EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
rc=0
nsenter --net="/run/netns/$NS" "$VENV/bin/python" tests/sdk/fuzz.py || rc=$?
[ "$rc" = 0 ] || { [ "$status" != 0 ] || status=$rc; }
exit "$status"
