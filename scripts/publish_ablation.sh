#!/usr/bin/env bash
# Copy an ablation's results (not its checkpoints or models) into the repository, e.g.
#   bash scripts/publish_ablation.sh runs/ablation docs/results/ablation
# report.md, metrics/, plots/, the SFT summary and curve, the SFT trials set aside, every
# stage's DONE.json (command line, wall time), the evaluation tables and the tuning points; rerun
# after each session of a resumed ablation.
set -euo pipefail
SRC="${1:?usage: publish_ablation.sh ABLATION_DIR DEST}"
DEST="${2:?usage: publish_ablation.sh ABLATION_DIR DEST}"
DEST="$(mkdir -p "$DEST" && cd "$DEST" && pwd)"
# The per-problem evaluation tables under one folder of SRC, at the same place under DEST.
copy_eval_tables() {
  [ -d "$SRC/$1" ] || return 0
  (cd "$SRC" && find "$1" -name '*.json' -not -name DONE.json -print0 \
    | xargs -0 -r -I{} sh -c 'mkdir -p "$0/$(dirname "$1")" && cp "$1" "$0/$1"' "$DEST" {})
}
cp "$SRC/report.md" "$DEST/"
for d in metrics plots; do
  if [ -d "$SRC/$d" ]; then rm -rf "${DEST:?}/$d"; cp -r "$SRC/$d" "$DEST/$d"; fi
done
if [ -f "$SRC/sft/sft_summary.json" ]; then
  mkdir -p "$DEST/sft"
  cp "$SRC/sft/sft_summary.json" "$DEST/sft/"
  [ -f "$SRC/sft/metrics.jsonl" ] && cp "$SRC/sft/metrics.jsonl" "$DEST/sft/"
fi
# The SFT runs set aside on validation: their settings and curves (no weights).
for t in "$SRC"/sft_trials/*/; do
  [ -f "$t/TRIAL.json" ] || continue
  mkdir -p "$DEST/sft_trials/$(basename "$t")"
  cp "$t/TRIAL.json" "$DEST/sft_trials/$(basename "$t")/"
  [ -f "$t/metrics.jsonl" ] && cp "$t/metrics.jsonl" "$DEST/sft_trials/$(basename "$t")/"
done
# Each finished stage's marker, and the per-problem tables of each finished evaluation.
(cd "$SRC" && find . -name DONE.json -not -path '*/checkpoints/*' -print0 \
  | xargs -0 -r -I{} sh -c 'mkdir -p "$0/stages/$(dirname "$1")" && cp "$1" "$0/stages/$1"' "$DEST" {})
copy_eval_tables evals
# Tuning on validation (ablate --tune): each point's bindings, training log and evaluation tables.
for t in "$SRC"/tune/*/; do
  [ -f "$t/TUNE.json" ] || continue
  mkdir -p "$DEST/tune/$(basename "$t")"
  cp "$t/TUNE.json" "$DEST/tune/$(basename "$t")/"
  [ -f "$t/train/metrics.jsonl" ] && cp "$t/train/metrics.jsonl" "$DEST/tune/$(basename "$t")/"
done
copy_eval_tables tune/evals
echo "published $SRC -> $DEST"
