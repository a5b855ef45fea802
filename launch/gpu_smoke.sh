#!/usr/bin/env bash
# Smoke test on one GPU: a tiny training run (tiny random model, bundled problems) for a few
# iterations, then checks that it left metrics, TensorBoard events and a checkpoint.
#
# usage: launch/gpu_smoke.sh [--workdir DIR] [--iterations K] [--dry-run] [-- extra train flags]
set -euo pipefail
source "$(dirname "$0")/_common.sh"

WORKDIR="/tmp/stepcoder_gpu_smoke.$$"; ITERS=3; EXTRA=()
PYTHON="${PYTHON:-python}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workdir) WORKDIR="$2"; shift 2 ;;
    --iterations) ITERS="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; EXTRA+=("$@"); break ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
cd "$REPO_ROOT"
ENVS=(JAX_PLATFORMS=cuda CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}")
run env "${ENVS[@]}" "$PYTHON" -c \
  "import jax; d = jax.devices(); print(d); assert d[0].platform == 'gpu', d"
# The CPU tiny config, on the GPU: one device, so a 1x1x1 mesh.
run env "${ENVS[@]}" "$PYTHON" -m stepcoder_jax train \
  --gin_file experiments/tiny_cpu.gin \
  --gin.mesh.data=1 --gin.mesh.fsdp=1 --gin.mesh.tensor=1 \
  "--gin.train.num_iterations=$ITERS" "--gin.train.work_dir='$WORKDIR'" "${EXTRA[@]}"
if [[ "$DRY_RUN" != 1 ]]; then
  test -s "$WORKDIR/metrics.jsonl" || die "no $WORKDIR/metrics.jsonl"
  ls "$WORKDIR"/tensorboard/events.out.tfevents.* >/dev/null || die "no TensorBoard events"
  ls -d "$WORKDIR"/checkpoints/[0-9]* >/dev/null || die "no checkpoint"
  echo "gpu_smoke: OK ($WORKDIR)"
fi
