#!/usr/bin/env bash
# Skiff: run the whole test suite.
#
#   scripts/test.sh [ARGS...]
#
# 1. installs system dependencies (scripts/install-deps.sh; ~0.2 s when done)
# 2. starts the registry fixture (scripts/test-fixture.sh start) and exports its env
# 3. builds the workspace once (cargo build --workspace --all-targets)
# 4. runs the Rust tests (cargo nextest if available, else cargo test); ARGS are
#    passed to the test runner (e.g. a test name filter)
# 5. runs the extra suites (run_extra_suites below)
# The fixture is always stopped on exit (success, failure, Ctrl-C, SIGTERM),
# unless it was already running when test.sh started (then it is left as found).
# Exit status: the first failing step's status, else 0.
#
# Knobs: SKIFF_SKIP_INSTALL_DEPS=1   skip step 1
#        SKIFF_KEEP_FIXTURE=1        leave the registries running afterwards
#        SKIFF_TEST_REGISTRY_PORT / SKIFF_TEST_REGISTRY_AUTH_PORT / SKIFF_FIXTURE_DIR
#        (see scripts/test-fixture.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

T0=$SECONDS
section() { printf '\n=== [%4ds] %s\n' "$((SECONDS - T0))" "$*"; }

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

# ---------------------------------------------------------------------------
# Extra (non-Rust) suites. Add later suites here, e.g. the Python SDK tests:
#   python3 -m venv .venv-test && .venv-test/bin/pip install -q -e sdk/python[test]
#   .venv-test/bin/pytest sdk/python/tests || return $?
# (pytest exits 5 when it collects no test; treat that explicitly.)
# The fixture env (SKIFF_TEST_REGISTRY...) is exported when this runs.
# Return non-zero on failure.
run_extra_suites() {
  local rc=0
  bash scripts/sdk-suites.sh || rc=$?
  # Smoke run of the benchmark suite (tiny N, debug build) so it cannot rot; never asserts a timing.
  bash bench/run.sh --quick --bin "${CARGO_TARGET_DIR:-$ROOT/target}/debug/skiff" cold-start || rc=$?
  return "$rc"
}
# ---------------------------------------------------------------------------

# Does any workspace member have a library target (else `cargo test --doc` errors)?
workspace_has_lib() {
  local meta
  meta=$(cargo metadata --no-deps --format-version 1 2>/dev/null) || return 1
  case "$meta" in
    *'"kind":["lib"]'*|*'"kind":["rlib"]'*|*'"kind":["proc-macro"]'*) return 0 ;;
    *) return 1 ;;
  esac
}

FIXTURE_STARTED=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ "$FIXTURE_STARTED" = 1 ] && [ "${SKIFF_KEEP_FIXTURE:-0}" != 1 ]; then
    section "stopping test fixture"
    scripts/test-fixture.sh stop || true
  fi
  section "done (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "${SKIFF_SKIP_INSTALL_DEPS:-0}" != 1 ]; then
  section "install-deps"
  bash scripts/install-deps.sh
fi

section "test fixture: start"
if bash scripts/test-fixture.sh running; then
  # Someone started it before us (e.g. a developer iterating); leave it running.
  echo "test fixture already running; it will be left running"
else
  FIXTURE_STARTED=1
fi
bash scripts/test-fixture.sh start
eval "$(bash scripts/test-fixture.sh env)"
bash scripts/test-fixture.sh env

command -v cargo >/dev/null 2>&1 || { echo "test.sh: cargo not found on PATH" >&2; exit 127; }

section "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

status=0
if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doctests: run them first (so the log ends with nextest's
  # summary), and not when ARGS filter the run.
  if [ "$#" -eq 0 ] && workspace_has_lib; then
    section "cargo test --workspace --doc"
    cargo test --workspace --doc --no-fail-fast || status=$?
  fi
  section "cargo nextest run --workspace --no-fail-fast"
  # --no-tests=warn: an (early) workspace without tests is not a failure.
  nt_status=0
  cargo nextest run --workspace --no-fail-fast --no-tests=warn "$@" || nt_status=$?
  if [ "$status" = 0 ]; then status=$nt_status; fi
else
  section "cargo test --workspace --no-fail-fast"
  cargo test --workspace --no-fail-fast "$@" || status=$?
fi

section "extra suites"
extra_status=0
run_extra_suites || extra_status=$?
if [ "$status" = 0 ]; then status=$extra_status; fi

exit "$status"
