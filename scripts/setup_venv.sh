#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install the pinned CPU requirements.
# Usage: source scripts/setup_venv.sh   (sets $PY to the venv's python)
# VENV overrides the location (default: .venv in the repo root).
# The terminal gets one line per step; pip's own output (index notes, build messages) goes to
# $VENV/setup.log, which is printed only when a step fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
STAMP="$VENV/.requirements.sha256"
SETUP_LOG="$VENV/setup.log"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-compile.txt" "$ROOT/pyproject.toml" \
  "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"

setup_step() {  # setup_step WHAT CMD...: run CMD with its output in the log; on failure show it
  local what="$1"
  shift
  echo "[setup] $what"
  echo "+ $*" >> "$SETUP_LOG"
  if ! "$@" >> "$SETUP_LOG" 2>&1; then
    echo "[setup] FAILED: $what. The end of $SETUP_LOG:" >&2
    tail -n 40 "$SETUP_LOG" >&2
    return 1
  fi
}

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup] creating virtual environment in $VENV"
  python3 -m venv "$VENV"
fi
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$WANT" ]]; then
  : > "$SETUP_LOG"
  SECONDS=0
  echo "[setup] installing the pinned requirements (first time: a few minutes; log: $SETUP_LOG)"
  setup_step "upgrading pip" "$VENV/bin/python" -m pip install --upgrade pip
  setup_step "installing requirements.txt" "$VENV/bin/python" -m pip install -r "$ROOT/requirements.txt"
  # `stepcoder-jax compile`'s backends, each in its own folder outside site-packages (see
  # requirements-compile.txt): libtpu for TPU slices, jax's CUDA plugin for GPU targets.
  rm -rf "$VENV/compile_targets"
  setup_step "installing the TPU compiler (libtpu) for stepcoder-jax compile" \
    "$VENV/bin/python" -m pip install --no-deps --target "$VENV/compile_targets/tpu" \
    $(grep -E '^libtpu==' "$ROOT/requirements-compile.txt")
  setup_step "installing the CUDA compiler plugin for stepcoder-jax compile" \
    "$VENV/bin/python" -m pip install --no-deps --target "$VENV/compile_targets/cuda" \
    $(grep -E '^jax-cuda12-' "$ROOT/requirements-compile.txt")
  setup_step "installing stepcoder_jax (editable)" \
    "$VENV/bin/python" -m pip install --no-deps -e "$ROOT"
  echo "$WANT" > "$STAMP"
  echo "[setup] done in ${SECONDS}s"
fi
PY="$VENV/bin/python"
export PY
