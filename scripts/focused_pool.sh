#!/usr/bin/env bash
# Diagnostic of the ablation: can the StepCoder arm raise the pass rate of its OWN training problems
# when they carry reward signal? The ablation's pool of 32 gave 1-10 passing rollouts of 320 per
# arm. Here the pool is the RL-pool problems that SFT solves at least once in 8 samples (seed 0);
# the arm trains on them alone with the ablation's StepCoder settings and budget (320 rollouts),
# and SFT and the trained model are compared on them with 16 fresh samples each (seed 1, not the
# samples that chose them, so the selection does not inflate SFT's "before").
# Needs a finished `ablate` run (its SFT model, RL pool and output vocabulary). Resumable: each
# step leaves a marker and is skipped on a rerun; training resumes from its checkpoint.
#   bash scripts/focused_pool.sh runs/ablation runs/focused
set -euo pipefail
if [[ $# -ne 2 ]]; then
  echo "usage: bash scripts/focused_pool.sh ABLATION_DIR OUT_DIR" >&2; exit 2
fi
for f in "$1/sft/config.json" "$1/data/rl_pool.jsonl" "$1/data/vocab/output_vocab.npz"; do
  [[ -f "$f" ]] || { echo "error: $f missing: $1 is not a finished ablate run" >&2; exit 2; }
done
ABL="$(realpath "$1")"; OUT="$2"; mkdir -p "$OUT"; OUT="$(realpath "$OUT")"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
GIN=(--gin_file "$ROOT/configs/experiments/ablation_gemma.gin"
     "--gin.model.output_vocab='$ABL/data/vocab/output_vocab.npz'")
step() {  # step NAME CMD...: run CMD unless NAME is done; log to $OUT/logs/NAME.log
  local name="$1"; shift
  if [[ -f "$OUT/done/$name" ]]; then echo "$name: done earlier, skipped"; return; fi
  mkdir -p "$OUT/logs" "$OUT/done"; echo "$name: running (log: $OUT/logs/$name.log)"
  local t0=$SECONDS
  local log="$OUT/logs/$name.log"
  "$@" > "$log" 2>&1 || { echo "error: step $name failed ($log): $(tail -n 1 "$log")" >&2; exit 1; }
  echo "$((SECONDS - t0))" > "$OUT/done/$name"
}
cd "$ROOT"
step select "$PY" -m stepcoder_jax eval --model "$ABL/sft" --problems "$ABL/data/rl_pool.jsonl" \
  --out "$OUT/select" --n 8 --temperature 0.8 "${GIN[@]}" --gin.eval.seed=0
step pool "$PY" scripts/focused_pool.py select "$OUT/select/eval.json" "$ABL/data/rl_pool.jsonl" \
  "$OUT/pool.jsonl"
step before "$PY" -m stepcoder_jax eval --model "$ABL/sft" --problems "$OUT/pool.jsonl" \
  --out "$OUT/before" --n 16 --temperature 0.8 "${GIN[@]}" --gin.eval.seed=1
step train "$PY" -m stepcoder_jax train --model "$ABL/sft" --problems "$OUT/pool.jsonl" \
  --work_dir "$OUT/train" "${GIN[@]}" --gin_file "$ROOT/configs/ablations/stepcoder.gin"
step export "$PY" -m stepcoder_jax export --model "$OUT/train" --out "$OUT/model"
step after "$PY" -m stepcoder_jax eval --model "$OUT/model" --problems "$OUT/pool.jsonl" \
  --out "$OUT/after" --n 16 --temperature 0.8 "${GIN[@]}" --gin.eval.seed=1
"$PY" scripts/focused_pool.py report "$OUT" | tee "$OUT/report.md"
