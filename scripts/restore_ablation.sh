#!/usr/bin/env bash
# The inverse of publish_ablation.sh: put an ablation's published results back into an empty run
# directory, e.g. on a new machine whose runs/ was lost,
#   bash scripts/restore_ablation.sh docs/results/ablation runs/ablation
# so that `ablate` with the same flags skips every stage whose results were published and reruns
# only what is missing. Weights are never published, so the stages whose output a later stage
# still loads come back unfinished and rerun: the data files and vocabulary (seconds,
# deterministic) and SFT (its model is every arm's start; with the same seed and data it repeats
# the published curve, which restore leaves in sft/published_metrics.jsonl to compare against).
# An arm's training is restored only when it finished: a partial one restarts from iteration 0.
set -euo pipefail
SRC="${1:?usage: restore_ablation.sh PUBLISHED_DIR ABLATION_DIR}"
DEST="${2:?usage: restore_ablation.sh PUBLISHED_DIR ABLATION_DIR}"
[ -f "$SRC/stages/data/DONE.json" ] || { echo "restore: $SRC holds no published ablation" \
  "(no stages/data/DONE.json)" >&2; exit 1; }
if [ -e "$DEST/data/DONE.json" ] || [ -e "$DEST/sft/DONE.json" ]; then
  echo "restore: $DEST already holds an ablation run; restore only into a new directory" >&2
  exit 1
fi
mkdir -p "$DEST"
SRC="$(cd "$SRC" && pwd)"
DEST="$(cd "$DEST" && pwd)"

# Stage markers, except those whose outputs (files or weights) are not published.
(cd "$SRC/stages" && find . -name DONE.json \
  -not -path ./data/DONE.json -not -path ./data/vocab/DONE.json -not -path ./sft/DONE.json \
  -print0 | xargs -0 -r -I{} sh -c 'mkdir -p "$0/$(dirname "$1")" && cp "$1" "$0/$1"' "$DEST" {})
# Per-problem evaluation tables (evals/ and tune/evals/), at the same places.
for d in evals tune/evals; do
  [ -d "$SRC/$d" ] || continue
  (cd "$SRC" && find "$d" -name '*.json' -print0 \
    | xargs -0 -r -I{} sh -c 'mkdir -p "$0/$(dirname "$1")" && cp "$1" "$0/$1"' "$DEST" {})
done
# Finished arms' training logs, where the report reads them.
for m in "$SRC"/metrics/*.jsonl; do
  [ -f "$m" ] || continue
  arm="$(basename "$m" .jsonl)"
  [ -f "$DEST/arms/$arm/train/DONE.json" ] && cp "$m" "$DEST/arms/$arm/train/metrics.jsonl"
done
# Tuning points (bindings and training logs) and the SFT runs set aside.
for t in "$SRC"/tune/*/; do
  [ -f "$t/TUNE.json" ] || continue
  name="$(basename "$t")"
  mkdir -p "$DEST/tune/$name"
  cp "$t/TUNE.json" "$DEST/tune/$name/"
  if [ -f "$t/metrics.jsonl" ]; then
    mkdir -p "$DEST/tune/$name/train"
    cp "$t/metrics.jsonl" "$DEST/tune/$name/train/"
  fi
done
if [ -d "$SRC/sft_trials" ]; then cp -r "$SRC/sft_trials" "$DEST/"; fi
if [ -f "$SRC/sft/metrics.jsonl" ]; then
  mkdir -p "$DEST/sft"
  cp "$SRC/sft/metrics.jsonl" "$DEST/sft/published_metrics.jsonl"
fi
echo "restored $SRC -> $DEST (to rerun: data, vocabulary, SFT and every unpublished stage)"
