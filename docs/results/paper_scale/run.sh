#!/usr/bin/env bash
# Compile the paper setting (configs/experiments/paper_6.7b_tpu.gin: DeepSeek-Coder-6.7B policy
# and value, fp32 Adam, remat, 128 rollout rows x (1024 + 1024) tokens) for each target below,
# one JSON report per target in this directory. Resumable: a target whose JSON exists is skipped
# (delete it to redo). Each 6.7B target takes ~10-30 min of CPU; run it in the background:
#   nohup nice -n 10 docs/results/paper_scale/run.sh > /tmp/paper_scale.log 2>&1 &
# Exit status of each compile: 0 fits, 1 does not fit (its one-line reason is in the JSON as
# "does_not_fit" and in <target>.stderr), 2 bad input.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
HERE="$ROOT/docs/results/paper_scale"
PY="${PY:-$ROOT/.venv/bin/python}"
TARGETS="${TARGETS:-v4-64 v5e-16 v5p-64 v4-32 v5e-256 h100x8}"
for t in $TARGETS; do
  if [[ -f "$HERE/$t.json" ]]; then
    echo "[paper_scale] $t: done ($HERE/$t.json)"
    continue
  fi
  echo "[paper_scale] $t: compiling ($(date -u +%H:%M:%S))"
  SECONDS=0
  "$PY" -m stepcoder_jax compile --topology "$t" --gin_file experiments/paper_6.7b_tpu.gin \
    --json --out "$HERE/$t.json.part" > /dev/null 2> "$HERE/$t.stderr.part"
  rc=$?
  if [[ $rc -le 1 && -f "$HERE/$t.json.part" ]]; then
    mv "$HERE/$t.json.part" "$HERE/$t.json"
    grep -v " INFO \|cudart_stub\|absl::InitializeLog" "$HERE/$t.stderr.part" > "$HERE/$t.stderr"
  fi
  rm -f "$HERE/$t.stderr.part"
  echo "[paper_scale] $t: exit $rc after ${SECONDS}s"
done
