#!/usr/bin/env bash
# The test suite: sets up .venv, lints and checks the formatting with ruff (pyproject.toml), then runs pytest on 2 processes.
# Extra arguments go to pytest, e.g. -m "not slow" or -k cccs.
# Hermetic: every cache the run writes (datasets, converted weights, library caches) goes to one
# fresh temporary directory shared by the pytest workers (tests/conftest.py) and removed at the
# end; set STEPCODER_JAX_TEST_CACHE to keep and reuse one instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_venv.sh"
cd "$ROOT"
if [[ -z "${STEPCODER_JAX_TEST_CACHE:-}" ]]; then
  STEPCODER_JAX_TEST_CACHE="$(mktemp -d "${TMPDIR:-/tmp}/stepcoder_jax_tests.XXXXXX")"
  trap 'rm -rf "$STEPCODER_JAX_TEST_CACHE"' EXIT
fi
export STEPCODER_JAX_TEST_CACHE
"$PY" -m ruff check --quiet .
"$PY" -m ruff format --check --quiet . || { echo "ruff format: the files above need formatting (run: $PY -m ruff format .)" >&2; exit 1; }
"$PY" -m pytest -n 2 --durations=15 -q "$@"
