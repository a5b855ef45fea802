# Shared helpers for the launch scripts (sourced, not run).
# DRY_RUN=1: print each command (shell-quoted, one line) instead of running it.

DRY_RUN="${DRY_RUN:-0}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Print a command as one shell-quoted line.
show() {
  local out="" a
  for a in "$@"; do out+="$(printf '%q' "$a") "; done
  printf '%s\n' "${out% }"
}

# Run a command, or only print it under --dry-run.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    printf '+ '; show "$@"
  else
    "$@"
  fi
}

die() { echo "error: $*" >&2; exit 2; }

# Quote an argument list into one string (for a remote --command).
quote_args() { show "$@"; }
