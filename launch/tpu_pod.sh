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
#   --skip-setup           do not ship code / install (already done on a reused slice)
#   --teardown             delete the slice after the run (also on failure)
#   --teardown-only        just delete the slice
#   --dry-run              print the gcloud commands instead of running them
set -euo pipefail
source "$(dirname "$0")/_common.sh"

NAME="${TPU_NAME:-}"; ZONE="${TPU_ZONE:-}"; PROJECT=""; TYPE="v4-64"
VERSION="tpu-ubuntu2204-base"; SPOT=0; GIN_FILES=(); WORKDIR=""; LOGDIR=""
SKIP_SETUP=0; HF_MODEL=""; TEARDOWN=0; TEARDOWN_ONLY=0; EXTRA=()
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

G=(gcloud compute tpus tpu-vm)
LOC=(--zone "$ZONE")
[[ -n "$PROJECT" ]] && LOC+=(--project "$PROJECT")
REMOTE_DIR="stepcoder_jax"

teardown() { run "${G[@]}" delete "$NAME" "${LOC[@]}" --quiet; }
if [[ $TEARDOWN_ONLY == 1 ]]; then teardown; exit 0; fi

# 1. Create the slice unless it exists (a dry run assumes it does not).
if [[ "$DRY_RUN" != 1 ]] && "${G[@]}" describe "$NAME" "${LOC[@]}" >/dev/null 2>&1; then
  echo "tpu_pod: reusing $NAME"
else
  printf '+ '; show "${G[@]}" describe "$NAME" "${LOC[@]}"
  CREATE=("${G[@]}" create "$NAME" "${LOC[@]}" --accelerator-type "$TYPE" --version "$VERSION")
  [[ $SPOT == 1 ]] && CREATE+=(--spot)
  run "${CREATE[@]}"
fi
[[ $TEARDOWN == 1 ]] && trap teardown EXIT

# 2. Ship the working tree (tracked and untracked, not ignored files) and install.
if [[ $SKIP_SETUP == 0 ]]; then
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
fi
if [[ -n "$HF_MODEL" ]]; then
  FETCH="huggingface-cli download $(printf '%q' "$HF_MODEL") --local-dir ~/models/$(printf '%q' "${HF_MODEL##*/}")"
  run "${G[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command "$FETCH"
fi

# 3. Train on every worker; stream worker output here and keep it.
TRAIN=(python3 -m stepcoder_jax train)
for f in "${GIN_FILES[@]}"; do TRAIN+=(--gin_file "$f"); done
[[ -n "$WORKDIR" ]] && TRAIN+=("--gin.train.work_dir='$WORKDIR'")
TRAIN+=("${EXTRA[@]}")
REMOTE="cd ~/$REMOTE_DIR && $(quote_args "${TRAIN[@]}")"
SSH=("${G[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command "$REMOTE")
if [[ "$DRY_RUN" == 1 ]]; then
  printf '+ '; show "${SSH[@]}"; echo "  (output tee'd to $LOGDIR/train.log)"
else
  mkdir -p "$LOGDIR"
  "${SSH[@]}" 2>&1 | tee "$LOGDIR/train.log"
  echo "tpu_pod: log saved to $LOGDIR/train.log"
fi
