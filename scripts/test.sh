#!/usr/bin/env bash
# The test suite: sets up .venv, then runs pytest on 2 processes.
# Extra arguments go to pytest, e.g. -m "not slow" or -k cccs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_venv.sh"
cd "$ROOT"
exec "$PY" -m pytest -n 2 --durations=15 -q "$@"
