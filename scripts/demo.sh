#!/usr/bin/env bash
# The main job on the embedded default, offline on CPU: sets up .venv, then runs
# `stepcoder-jax demo` (SFT -> StepCoder PPO -> before/after pass@1 table and plot).
# Extra arguments go to the demo command, e.g. --gin.train.num_iterations=2.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_venv.sh"
cd "$ROOT"
exec "$PY" -m stepcoder_jax demo "$@"
