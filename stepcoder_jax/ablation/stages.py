"""The ablation's subprocess stages: what a stage is, when it is done, and running one.

Each stage is an existing CLI command (`sft`, `train`, `export`, `eval`) run as a fresh process
(`python -m stepcoder_jax ...`): its memory is freed when it ends, and gin starts from the same
files every time. A stage is done when `<its output dir>/DONE.json` exists (written here after
the command exits 0, with the command line, wall time, exit code and fingerprint: see
ablation/fingerprint.py), so running the ablation again skips every finished stage. An
unfinished `train` or `sft` resumes from its orbax checkpoint by itself, and an unfinished `eval`
from its sampling journal (runs/eval_journal.py).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from stepcoder_jax import preemption
from stepcoder_jax.ablation import fingerprint as ablation_fingerprint

DONE = "DONE.json"


@dataclasses.dataclass(frozen=True)
class Stage:
  """One subprocess stage: `stepcoder-jax <argv>`, done when `out/DONE.json` exists."""

  name: str
  out: Path
  argv: tuple[str, ...]
  module: str = "stepcoder_jax"  # run as `python -m <module> <argv>`


def read_done(directory: Path) -> dict | None:
  """The DONE.json of a stage directory, or None while the stage is not finished."""
  f = Path(directory) / DONE
  if not f.is_file():
    return None
  try:
    return json.loads(f.read_text(encoding="utf-8"))
  except json.JSONDecodeError:
    return None  # a torn marker (killed while writing) counts as not done


def write_done(directory: Path, record: dict) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  tmp = directory / (DONE + ".tmp")
  tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
  tmp.replace(directory / DONE)


def run_stage(stage: Stage, log_dir: Path, fingerprint: str | None = None) -> tuple[int, float]:
  """Run one stage's command, its output appended to logs/<name>.log; (exit code, seconds).
  DONE.json records `fingerprint` (ablation/fingerprint.py) when given."""
  cmd = [sys.executable, "-m", stage.module, *stage.argv]
  log_dir.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  with open(log_dir / f"{stage.name}.log", "a", encoding="utf-8") as log:
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
      rc = proc.wait()
    except KeyboardInterrupt:
      # Ctrl-C reached the stage too (same process group), and a train or sft stage saves
      # before it exits: wait for that (a second Ctrl-C kills it), then stop.
      try:
        proc.wait()
      finally:
        if proc.poll() is None:
          proc.kill()
          proc.wait()
      raise
  wall = time.time() - t0
  # A train or sft stage stopped by a signal also exits 0, leaving STOPPED.json: not done.
  if rc == 0 and preemption.read_marker(stage.out) is None:
    record = {
      "command": shlex.join(cmd),
      "wall_s": round(wall, 3),
      "exit_code": 0,
      "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if fingerprint is not None:
      record.update(ablation_fingerprint.record(fingerprint))
    write_done(stage.out, record)
  return rc, wall
