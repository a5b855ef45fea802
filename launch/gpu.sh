#!/usr/bin/env bash
# Train on NVIDIA GPUs. One host: a single process drives every visible GPU (the mesh from gin
# spans them). Several hosts: run this script once per host with the same --coordinator and
# --num-hosts and its own --host-id (SLURM/Open MPI are detected by jax without them).
#
# usage: launch/gpu.sh [options] [--] [extra train flags...]
#   --gin_file F          repeatable (default experiments/gpu_dev_qwen.gin)
#   --workdir DIR         run directory (shared filesystem for multi-host checkpoints)
#   --gpus LIST           CUDA_VISIBLE_DEVICES, e.g. 0,1 (default: all)
#   --coordinator H:P     multi-host: address of host 0's coordinator
#   --num-hosts N         multi-host: number of processes (one per host)
#   --host-id I           multi-host: this host's process id, 0..N-1
#   --logdir DIR          where the log goes (default launch_logs/gpu-<time>)
#   --dry-run             print the command and its environment instead of running it
set -euo pipefail
source "$(dirname "$0")/_common.sh"

GIN_FILES=(); WORKDIR=""; GPUS=""; COORD=""; NHOSTS=""; HOST_ID=""; LOGDIR=""; EXTRA=()
PYTHON="${PYTHON:-python}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gin_file) GIN_FILES+=("$2"); shift 2 ;;
    --gin_file=*) GIN_FILES+=("${1#*=}"); shift ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --gpus) GPUS="$2"; shift 2 ;;
    --coordinator) COORD="$2"; shift 2 ;;
    --num-hosts) NHOSTS="$2"; shift 2 ;;
    --host-id) HOST_ID="$2"; shift 2 ;;
    --logdir) LOGDIR="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; EXTRA+=("$@"); break ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
[[ ${#GIN_FILES[@]} -gt 0 ]] || GIN_FILES=(experiments/gpu_dev_qwen.gin)
[[ -n "$LOGDIR" ]] || LOGDIR="$REPO_ROOT/launch_logs/gpu-$(date -u +%Y%m%d-%H%M%S)"

ENVS=(JAX_PLATFORMS=cuda
      # Preallocate most of the memory once (fragmentation otherwise costs large models).
      XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
      # Overlap collectives with compute across the mesh.
      "XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true${XLA_FLAGS:+ $XLA_FLAGS}")
[[ -n "$GPUS" ]] && ENVS+=("CUDA_VISIBLE_DEVICES=$GPUS")
if [[ -n "$COORD$NHOSTS$HOST_ID" ]]; then
  [[ -n "$COORD" && -n "$NHOSTS" && -n "$HOST_ID" ]] \
    || die "multi-host needs all of --coordinator, --num-hosts and --host-id"
  ENVS+=("JAX_COORDINATOR_ADDRESS=$COORD" "JAX_NUM_PROCESSES=$NHOSTS" "JAX_PROCESS_ID=$HOST_ID")
fi

TRAIN=("$PYTHON" -m stepcoder_jax train)
for f in "${GIN_FILES[@]}"; do TRAIN+=(--gin_file "$f"); done
[[ -n "$WORKDIR" ]] && TRAIN+=("--gin.train.work_dir='$WORKDIR'")
TRAIN+=("${EXTRA[@]}")

if [[ "$DRY_RUN" == 1 ]]; then
  printf '+ env '; show "${ENVS[@]}" "${TRAIN[@]}"; echo "  (output tee'd to $LOGDIR/train.log)"
  exit 0
fi
mkdir -p "$LOGDIR"
cd "$REPO_ROOT"
env "${ENVS[@]}" "${TRAIN[@]}" 2>&1 | tee "$LOGDIR/train.log"
exit "${PIPESTATUS[0]}"
