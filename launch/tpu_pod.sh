#!/usr/bin/env bash
# Train on a Cloud TPU VM slice (v4 / v5p / v5e): create or reuse the slice, ship this working
# tree to every worker, install requirements-tpu.txt, run `python -m stepcoder_jax train` on all
# workers at once (--worker=all: one jax process per host; jax.distributed finds the peers),
# stream the log here and keep a copy, and optionally delete the slice afterwards.
#
# usage: launch/tpu_pod.sh --name NAME --zone ZONE [options] [--] [extra train flags...]
#   --name NAME            TPU VM name (or $TPU_NAME)
#   --zone ZONE            e.g. us-central2-b (v4), us-east5-a (v5p) (or $TPU_ZONE)
#   --project PROJECT      gcloud project (default: gcloud's configured one)
#   --accelerator-type T   slice type when creating (default v4-64)
#   --version V            TPU VM runtime image when creating (default tpu-ubuntu2204-base)
#   --spot                 create as a Spot VM
#   --gin_file F           repeatable; passed to train (default experiments/paper_6.7b_tpu.gin)
#   --workdir DIR          run directory on the workers, a gs:// bucket for multi-host
#                          checkpoints (default gs://$BUCKET/stepcoder/NAME if $BUCKET is set)
#   --logdir DIR           local log directory (default launch_logs/NAME-<time>)
#   --hf-model REPO_ID     download these weights to ~/models/<name> on every worker first
#                          (e.g. deepseek-ai/deepseek-coder-6.7b-instruct; the gin file's model.path)
#   --skip-setup           do not ship code / install on a reused slice (one this script
#                          creates is always set up)
#   --teardown             delete the slice after the run (also on failure)
#   --teardown-only        just delete the slice
#   --auto-resume          (for --spot) when the slice is preempted, recreate it, set it up again
#                          and rerun the same train command on the same --workdir, which resumes
#                          from its last checkpoint; see "Preemption" below
#   --max-restarts N       give up after N such restarts (default 20)
#   --dry-run              print the gcloud commands instead of running them
#
# Preemption. A Spot slice can be taken back at any time: every host gets SIGTERM, and train
# finishes its iteration, saves a checkpoint at an iteration all hosts agree on, prints
# "stopped by SIGTERM after iteration K: saved ..." and exits 0 (docs/preemption.md). The slice
# then goes to state PREEMPTED and must be deleted and created again. With --auto-resume this
# script does that in a loop: after each run it reads the slice's state (`describe
# --format=value(state)`); a finished run (exit 0, no "stopped by" line, slice READY) ends the
# loop, a failed one (nonzero exit on a READY slice without "stopped by") ends it with its exit
# status, and a preempted one (slice not READY, or "stopped by" in the log) is restarted: the
# script waits up to $TPU_POD_STATE_WAIT_S seconds (default 180) for a signalled slice to leave
# READY, deletes a slice that did, creates it again, ships the code, and runs train again.
# Checkpoints must outlive the VMs, so --auto-resume needs --workdir (a gs:// bucket). Each
# attempt's log is kept: train.log, then train.restart<N>.log.
set -euo pipefail
source "$(dirname "$0")/_common.sh"

NAME="${TPU_NAME:-}"; ZONE="${TPU_ZONE:-}"; PROJECT=""; TYPE="v4-64"
VERSION="tpu-ubuntu2204-base"; SPOT=0; GIN_FILES=(); WORKDIR=""; LOGDIR=""
SKIP_SETUP=0; HF_MODEL=""; TEARDOWN=0; TEARDOWN_ONLY=0; EXTRA=(); AUTO_RESUME=0
MAX_RESTARTS=20
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --zone) ZONE="$2"; shift 2 ;;
    --project) PROJECT="$2"; shift 2 ;;
    --accelerator-type) TYPE="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --gin_file) GIN_FILES+=("$2"); shift 2 ;;
    --gin_file=*) GIN_FILES+=("${1#*=}"); shift ;;
    --workdir) WORKDIR="$2"; shift 2 ;;
    --logdir) LOGDIR="$2"; shift 2 ;;
    --skip-setup) SKIP_SETUP=1; shift ;;
    --hf-model) HF_MODEL="$2"; shift 2 ;;
    --teardown) TEARDOWN=1; shift ;;
    --teardown-only) TEARDOWN_ONLY=1; shift ;;
    --auto-resume|--auto_resume) AUTO_RESUME=1; shift ;;
    --max-restarts) MAX_RESTARTS="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; EXTRA+=("$@"); break ;;
    *) EXTRA+=("$1"); shift ;;
  esac
done
[[ -n "$NAME" ]] || die "--name (or \$TPU_NAME) is required"
[[ -n "$ZONE" ]] || die "--zone (or \$TPU_ZONE) is required"
[[ ${#GIN_FILES[@]} -gt 0 ]] || GIN_FILES=(experiments/paper_6.7b_tpu.gin)
if [[ -z "$WORKDIR" && -n "${BUCKET:-}" ]]; then WORKDIR="gs://$BUCKET/stepcoder/$NAME"; fi
[[ -n "$LOGDIR" ]] || LOGDIR="$REPO_ROOT/launch_logs/$NAME-$(date -u +%Y%m%d-%H%M%S)"
if [[ $AUTO_RESUME == 1 ]]; then
  [[ -n "$WORKDIR" ]] ||
    die "--auto-resume needs --workdir (or \$BUCKET): checkpoints that outlive the slice"
  [[ "$MAX_RESTARTS" =~ ^[0-9]+$ ]] || die "--max-restarts: expected a number, got $MAX_RESTARTS"
fi

G=(gcloud compute tpus tpu-vm)
LOC=(--zone "$ZONE")
[[ -n "$PROJECT" ]] && LOC+=(--project "$PROJECT")
REMOTE_DIR="stepcoder_jax"

teardown() { run "${G[@]}" delete "$NAME" "${LOC[@]}" --quiet; }
if [[ $TEARDOWN_ONLY == 1 ]]; then teardown; exit 0; fi

# 1. Create the slice unless it exists (a dry run assumes it does not).
ensure_slice() {
  if [[ "$DRY_RUN" != 1 ]] && "${G[@]}" describe "$NAME" "${LOC[@]}" >/dev/null 2>&1; then
    echo "tpu_pod: reusing $NAME"
  else
    printf '+ '; show "${G[@]}" describe "$NAME" "${LOC[@]}"
    CREATE=("${G[@]}" create "$NAME" "${LOC[@]}" --accelerator-type "$TYPE" --version "$VERSION")
    [[ $SPOT == 1 ]] && CREATE+=(--spot)
    run "${CREATE[@]}"
    FRESH=1
  fi
}

# 2. Ship the working tree (tracked and untracked, not ignored files) and install.
setup_slice() {
  TARBALL="/tmp/stepcoder_jax-$NAME.tgz"
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '+ '; echo "(cd $(printf '%q' "$REPO_ROOT") && git ls-files -co --exclude-standard | tar czf $TARBALL -T -)"
  else
    (cd "$REPO_ROOT" && git ls-files -co --exclude-standard | tar czf "$TARBALL" -T -)
  fi
  run "${G[@]}" scp "$TARBALL" "$NAME:~/stepcoder_jax.tgz" "${LOC[@]}" --worker=all
  SETUP="rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR && tar xzf ~/stepcoder_jax.tgz -C ~/$REMOTE_DIR"
  SETUP+=" && cd ~/$REMOTE_DIR && python3 -m pip install -q -r requirements-tpu.txt"
  SETUP+=" && python3 -m pip install -q --no-deps -e ."
  run "${G[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command "$SETUP"
}
fetch_model() {
  [[ -n "$HF_MODEL" ]] || return 0
  FETCH="huggingface-cli download $(printf '%q' "$HF_MODEL") --local-dir ~/models/$(printf '%q' "${HF_MODEL##*/}")"
  run "${G[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command "$FETCH"
}

# 3. Train on every worker; stream worker output here and keep it (in $1).
TRAIN=(python3 -m stepcoder_jax train)
for f in "${GIN_FILES[@]}"; do TRAIN+=(--gin_file "$f"); done
[[ -n "$WORKDIR" ]] && TRAIN+=("--gin.train.work_dir='$WORKDIR'")
TRAIN+=("${EXTRA[@]}")
REMOTE="cd ~/$REMOTE_DIR && $(quote_args "${TRAIN[@]}")"
SSH=("${G[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command "$REMOTE")
train_once() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '+ '; show "${SSH[@]}"; echo "  (output tee'd to $1)"
  else
    mkdir -p "$LOGDIR"
    local rc=0
    "${SSH[@]}" 2>&1 | tee "$1" || rc=$?
    echo "tpu_pod: log saved to $1"
    return "$rc"
  fi
}

slice_state() {  # READY, PREEMPTED, ... or GONE
  "${G[@]}" describe "$NAME" "${LOC[@]}" --format='value(state)' 2>/dev/null || echo GONE
}

FRESH=0
ensure_slice
[[ $TEARDOWN == 1 ]] && trap teardown EXIT
if [[ $SKIP_SETUP == 0 || $FRESH == 1 ]]; then setup_slice; fi
fetch_model
if [[ $AUTO_RESUME == 0 ]]; then
  train_once "$LOGDIR/train.log"
  exit 0
fi
if [[ "$DRY_RUN" == 1 ]]; then
  train_once "$LOGDIR/train.log"
  echo "# --auto-resume: then, until the run finishes (at most $MAX_RESTARTS restarts):"
  printf '+ '; show "${G[@]}" describe "$NAME" "${LOC[@]}" --format='value(state)'
  echo "# and when the slice was preempted: delete it, create it, set it up, train again"
  exit 0
fi
LOG="$LOGDIR/train.log"
for ((restart = 1; ; restart++)); do
  rc=0; train_once "$LOG" || rc=$?
  stopped=0; grep -q ": saved .*; to resume, run the same command: " "$LOG" && stopped=1
  state="$(slice_state)"
  # A signalled run may end before its slice leaves READY: give the preemption time to show.
  waited=0
  while [[ $stopped == 1 && $state == READY && $waited -lt ${TPU_POD_STATE_WAIT_S:-180} ]]; do
    sleep "${TPU_POD_POLL_S:-15}"; waited=$((waited + ${TPU_POD_POLL_S:-15}))
    state="$(slice_state)"
  done
  if [[ $state == READY && $stopped == 0 ]]; then
    [[ $rc == 0 ]] && echo "tpu_pod: training finished"
    exit "$rc"
  fi
  (( restart <= MAX_RESTARTS )) ||
    die "the run was stopped $restart times; giving up (--max-restarts $MAX_RESTARTS)"
  echo "tpu_pod: the run was stopped (slice state $state, exit $rc); restart $restart of" \
       "$MAX_RESTARTS, resuming from $WORKDIR"
  if [[ $state != READY ]]; then
    [[ $state == GONE ]] || teardown
    FRESH=0
    ensure_slice
    setup_slice
    fetch_model
  fi
  LOG="$LOGDIR/train.restart$restart.log"
done
