"""`stepcoder-jax ablate`'s driver: the data stage, every planned stage not done yet, the report.

The data stage (writing the problem files) and the report run in this process; the report runs
every time and reads whatever is finished. The plan (ablation/plan.py) says which stages there
are; each runs as its own process (ablation/stages.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from stepcoder_jax.ablation import data as ablation_data
from stepcoder_jax.ablation import fingerprint as ablation_fingerprint
from stepcoder_jax.ablation import plan as ablation_plan
from stepcoder_jax.ablation import report as ablation_report
from stepcoder_jax.ablation import tune as ablation_tune
from stepcoder_jax.ablation.plan import Settings
from stepcoder_jax.ablation.stages import read_done, run_stage, write_done
from stepcoder_jax.errors import UserError


def data_stage(s: Settings, echo: Callable[[str], None]) -> None:
  """Write the problem files once (in this process: cheap, no model)."""
  d = s.out / "data"
  settings = ablation_data.settings_of(s.mbpp, s.heldout_mbpp)
  done = read_done(d)
  if done is not None:
    ablation_data.check_resume(done, settings, d)
    echo(f"[data] done earlier: {done['counts']}")
    return
  t0 = time.time()
  counts = ablation_data.write(d, ablation_data.build(s.mbpp, s.heldout_mbpp))
  write_done(
    d,
    {
      "command": "ablate (data stage, in process)",
      "settings": settings,
      "counts": counts,
      "wall_s": round(time.time() - t0, 3),
      "exit_code": 0,
    },
  )
  echo(f"[data] wrote {counts} in {time.time() - t0:.1f} s")


def _tail(path: Path, lines: int = 5) -> str:
  try:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
  except OSError:
    return ""


def run_ablation(
  s: Settings, echo: Callable[[str], None] = print, report_only: bool = False
) -> int:
  """Run every stage not done yet, then the report; 0, or 1 when a stage failed.
  `report_only`: write the report from what has finished (e.g. after a kill) and run nothing."""
  ablation_plan.check_settings(s)
  stages = ablation_plan.plan(s)
  if report_only:
    if read_done(s.out / "data") is None:
      raise UserError(f"ablate --report_only: {s.out} holds no ablation (no data/DONE.json)")
    echo(f"[report] {ablation_report.write_report(s, stages)}")
    return 0
  # Before anything runs: no finished stage may be kept from other settings.
  ablation_fingerprint.check(stages, s.out, read_done, write_done)
  fingerprints = ablation_fingerprint.fingerprints(stages, s.out)
  s.out.mkdir(parents=True, exist_ok=True)
  data_stage(s, echo)
  ablation_tune.record(s.tune, s.out, s.tune_arm)
  failed = None
  t_all = time.time()
  for i, stage in enumerate(stages, 1):
    head = f"[{i}/{len(stages)}] {stage.name}"
    if read_done(stage.out) is not None:
      echo(f"{head}: done earlier, skipped")
      continue
    echo(f"{head}: running (log: {s.out / 'logs' / (stage.name + '.log')})")
    rc, wall = run_stage(stage, s.out / "logs", fingerprints[stage.name])
    if rc != 0:
      echo(
        f"{head}: FAILED with exit code {rc} after {wall:.1f} s; last lines of its log:\n"
        + _tail(s.out / "logs" / f"{stage.name}.log")
      )
      failed = stage
      break
    if read_done(stage.out) is None:
      echo(
        f"{head}: stopped by a signal after {wall:.1f} s, its state saved; run the same "
        "command again to resume"
      )
      return 0
    echo(f"{head}: done in {wall:.1f} s (total {time.time() - t_all:.1f} s)")
  report = ablation_report.write_report(s, stages)
  echo(f"[report] {report}")
  if failed is not None:
    echo(f"stopped at {failed.name}; fix the cause and run the same command again to resume")
    return 1
  return 0
