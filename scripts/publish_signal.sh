#!/usr/bin/env bash
# Copy the reward-signal measurement's results (not its checkpoints or models) into the
# repository, in the layout `python -m stepcoder_jax.ablation.signal` reads, e.g.
#   bash scripts/publish_signal.sh runs/signal docs/results/signal/data
# Each run's metrics.jsonl and operative gin, each training-pool probe's per-problem tables,
# the SFT summary and every finished stage's DONE.json (command line, wall time).
set -euo pipefail
SRC="${1:?usage: publish_signal.sh SIGNAL_DIR DEST}"
DEST="${2:?usage: publish_signal.sh SIGNAL_DIR DEST}"
DEST="$(mkdir -p "$DEST" && cd "$DEST" && pwd)"  # absolute: the copy runs from SRC
cd "$SRC"
find . \( -path './arms/*/train/metrics.jsonl' -o -path './arms/*/train/operative_config.gin' \
  -o -path './evals/*/probe/eval.json' -o -path './evals/*/probe/eval_subtask.json' \
  -o -path './sft/sft_summary.json' -o -path './sft/metrics.jsonl' -o -path './data/DONE.json' \
  -o \( -name DONE.json -not -path '*/checkpoints/*' \) \) -print0 \
  | xargs -0 -r -I{} sh -c 'mkdir -p "$0/$(dirname "$1")" && cp "$1" "$0/$1"' "$DEST" {}
[ -f signal.md ] && cp signal.md "$DEST/"
echo "copied to $DEST: $(find "$DEST" -type f | wc -l) files, $(du -sh "$DEST" | cut -f1)"
