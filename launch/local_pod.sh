#!/usr/bin/env bash
# A simulated multi-host pod on this machine: N CPU processes, each with D devices, joined by
# jax.distributed (gloo collectives), exactly as hosts of a TPU slice or GPU cluster would be.
#
# usage: launch/local_pod.sh N [options] [--] [ARGS for the entry point...]
#   -d, --devices-per-process D   simulated CPU devices per process (default 2)
#   --port P                      coordinator port on localhost (default 12400 + random)
#   --logdir DIR                  per-process logs proc_<i>.log (default /tmp/local_pod.<pid>)
#   --mesh DATA,FSDP,TENSOR       pass --gin.mesh.data=... --gin.mesh.fsdp=... --gin.mesh.tensor=...
#   --entry "CMD"                 program to run (default: "$PYTHON -m stepcoder_jax")
#   --dry-run                     print the commands and exit
# Example: launch/local_pod.sh 2 --mesh -1,1,1 -- train --gin_file experiments/tiny_cpu.gin
#
# Each process gets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, JAX_PLATFORMS=cpu
# and XLA_FLAGS=--xla_force_host_platform_device_count=D; stepcoder_jax.sharding.distributed_init
# reads them. Exit status: the first failing process's, else 0. SIGTERM or SIGINT to this script
# goes on to every process as SIGTERM (a simulated preemption: train and sft save and exit 0,
# see docs/preemption.md), and the script waits for them.
set -euo pipefail
source "$(dirname "$0")/_common.sh"

[[ $# -ge 1 && "$1" =~ ^[0-9]+$ ]] || die "usage: $0 N [options] [--] ARGS (N = number of processes)"
NPROC="$1"; shift
(( NPROC >= 1 )) || die "N must be >= 1"
DEVICES=2
PORT=$((12400 + RANDOM % 2000))
LOGDIR="/tmp/local_pod.$$"
MESH=""
PYTHON="${PYTHON:-python}"
ENTRY=""
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -d|--devices-per-process) DEVICES="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    --logdir) LOGDIR="$2"; shift 2 ;;
    --mesh) MESH="$2"; shift 2 ;;
    --entry) ENTRY="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; ARGS+=("$@"); break ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
[[ "$DEVICES" =~ ^[0-9]+$ ]] || die "--devices-per-process: expected a number, got $DEVICES"
if [[ -n "$MESH" ]]; then
  IFS=, read -r M_DATA M_FSDP M_TENSOR <<<"$MESH"
  [[ -n "${M_TENSOR:-}" ]] || die "--mesh: expected DATA,FSDP,TENSOR, got $MESH"
  ARGS+=("--gin.mesh.data=$M_DATA" "--gin.mesh.fsdp=$M_FSDP" "--gin.mesh.tensor=$M_TENSOR")
fi
if [[ -n "$ENTRY" ]]; then
  read -r -a CMD <<<"$ENTRY"
else
  CMD=("$PYTHON" -m stepcoder_jax)
fi

proc_env() {  # the environment of process $1
  echo "JAX_PLATFORMS=cpu" \
       "XLA_FLAGS=--xla_force_host_platform_device_count=$DEVICES" \
       "JAX_COORDINATOR_ADDRESS=localhost:$PORT" \
       "JAX_NUM_PROCESSES=$NPROC" \
       "JAX_PROCESS_ID=$1"
}

if [[ "$DRY_RUN" == 1 ]]; then
  for ((i = 0; i < NPROC; i++)); do
    printf '+ env %s ' "$(proc_env "$i")"; show "${CMD[@]}" "${ARGS[@]}"
  done
  exit 0
fi

mkdir -p "$LOGDIR"
cd "$REPO_ROOT"
PIDS=()
cleanup() {  # stop only the processes this script started (SIGKILL: a peer is gone)
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
forward() {  # SIGTERM / SIGINT here: like a preemption notice, to every process, once
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
}
trap forward INT TERM
for ((i = 0; i < NPROC; i++)); do
  # shellcheck disable=SC2046
  env $(proc_env "$i") "${CMD[@]}" "${ARGS[@]}" >"$LOGDIR/proc_$i.log" 2>&1 &
  PIDS+=("$!")
done
echo "local_pod: $NPROC processes x $DEVICES devices, coordinator localhost:$PORT, logs in $LOGDIR"
STATUS=0
for ((i = 0; i < NPROC; i++)); do
  while :; do
    rc=0; wait "${PIDS[$i]}" || rc=$?
    # A trapped signal ends `wait` early (status > 128) while the process runs on: wait again.
    (( rc > 128 )) && kill -0 "${PIDS[$i]}" 2>/dev/null || break
  done
  if [[ $rc != 0 ]]; then
    if [[ $STATUS == 0 ]]; then
      STATUS=$rc
      echo "local_pod: process $i failed (exit $rc); last lines of its log:" >&2
      tail -n 30 "$LOGDIR/proc_$i.log" >&2 || true
      cleanup  # the others would wait forever for the missing peer
    fi
  fi
done
# Process 0's output is the run's output.
[[ $STATUS == 0 ]] && cat "$LOGDIR/proc_0.log"
exit "$STATUS"
