#!/usr/bin/env bash
# The reward-signal measurement (docs/results/signal/README.md): GRPO with 4 samples per
# problem, arms no CCCS / CCCS paper / CCCS adaptive / adaptive + dynamic sampling, two seeds each,
# on the ablation's protocol (data, SFT, held-out and training-pool evaluations). It is
# `stepcoder-jax ablate` with the arms of configs/signal/, so it resumes like the ablation: each
# finished stage leaves DONE.json and is skipped on a rerun (training resumes from its checkpoint);
# then the signal summary (stepcoder_jax/ablation/signal.py) is written to OUT/signal.md.
#   bash scripts/signal.sh OUT [gemma|tiny] [extra ablate flags, e.g. --mbpp PATH]
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: bash scripts/signal.sh OUT [gemma|tiny] [ablate flags...]" >&2; exit 2
fi
OUT="$1"; KIND="${2:-gemma}"; shift $(( $# >= 2 ? 2 : 1 ))
[[ "$KIND" == gemma || "$KIND" == tiny ]] || { echo "error: kind must be gemma or tiny" >&2; exit 2; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
ARMS=()
for seed in 0 1; do for arm in nocccs paper adaptive adaptive_ds; do ARMS+=("${arm}_s$seed"); done; done
cd "$ROOT"
"$PY" -m stepcoder_jax ablate --out "$OUT" --arm_dir signal --arms "${ARMS[@]}" \
  --gin_file "signal/experiment_$KIND.gin" "$@"
"$PY" -m stepcoder_jax.ablation.signal "$OUT" "${ARMS[@]}"
