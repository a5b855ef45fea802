"""The settings that shape a StepCoder run, so that a resume never silently mixes two runs.

A checkpoint of `train` records them (`fingerprint`); a run resuming it compares (`check`) and
stops with one line naming every binding that differs, unless the user continues with new
settings on purpose (`train --allow_changed_settings`). Compared:

* `train.*` (TrainConfig; its prompt limit is gin's `prompt.max_tokens`), except `MAY_CHANGE`:
  the run directory, how many iterations to run and how often to evaluate shape no step already
  taken;
* `ppo.*`, `cccs.*`, `fgo.*` and `reward.*` (the reward per outcome);
* `model.*`: the policy's architecture and dtypes (ModelConfig);
* except, in any scope, the knobs that change how a forward pass is computed, not what it
  computes (`logprob_chunk`, `train.prefill_per_group`, `train.prompt_bucket`,
  `model.remat`,
  `model.scan_layers`): a resume on a machine with less
  memory may need them;
* `problems`: how many training problems and a hash of their ids.

Not compared: logging, checkpoint cadence (`checkpoint.*`), evaluation (`eval.*`), the mesh
(`mesh.*`), and the execution pool's limits (`execution.*`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from stepcoder_jax.errors import UserError

MAY_CHANGE = (
  "train.work_dir",
  "train.num_iterations",
  "train.eval_every",
  "train.logprob_chunk",
  "train.prefill_per_group",
  "train.prompt_bucket",
  "ppo.logprob_chunk",
  "model.remat",
  "model.scan_layers",
)
FLAG = "--allow_changed_settings"


def _fields(scope: str, cfg: Any) -> dict[str, Any]:
  return {
    f"{scope}.{k}": v
    for k, v in dataclasses.asdict(cfg).items()
    if f"{scope}.{k}" not in MAY_CHANGE
  }


def fingerprint(*, train, ppo, cccs, fgo, model, problems: Sequence, reward=None) -> dict:
  """binding -> value of every compared setting (see the module docstring), as JSON reads it."""
  fp: dict[str, Any] = {}
  for scope, cfg in (
    ("train", train),
    ("ppo", ppo),
    ("cccs", cccs),
    ("fgo", fgo),
    ("model", model),
    ("reward", reward),
  ):
    if cfg is not None:
      fp.update(_fields(scope, cfg))
  ids = sorted(str(p.id) for p in problems)
  fp["problems"] = f"{len(ids)} ({hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:12]})"
  return json.loads(json.dumps(fp, default=str))


def differences(saved: dict, now: dict) -> list[str]:
  """The bindings whose values differ (absent on one side counts), sorted."""
  return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))


def describe(saved: dict, now: dict, keys: Sequence[str]) -> str:
  """'ppo.kl_coef 0.05 -> 0.5, ...' for `keys`."""
  return ", ".join(f"{k} {saved.get(k)!r} -> {now.get(k)!r}" for k in keys)


def check(saved: dict | None, now: dict, directory: Path | str, allow: bool) -> list[str]:
  """The differing bindings (empty when none, or when the checkpoint records no settings);
  a one-line UserError when there are some and `allow` is False."""
  if not saved:  # a checkpoint from before settings were recorded: nothing to compare
    return []
  diff = differences(saved, now)
  if diff and not allow:
    raise UserError(
      f"train: {directory} was saved by a run with other settings "
      f"({describe(saved, now, diff)}); rerun with the same settings, use a new "
      f"--work_dir, or pass {FLAG} to continue with the new ones"
    )
  return diff


OPERATIVE = "operative_config.gin"
_SEGMENT = "# ---- resumed at iteration "


def record_operative(
  work_dir: Path | str, text: str, iteration: int | None, changed: Sequence[str] = ()
) -> None:
  """Record the operative gin config of this segment of a run in <work_dir>/operative_config.gin.

  A fresh run (`iteration` None) writes the file. A resumed segment whose config differs from the
  last one recorded is appended under a comment line naming the iteration it resumed at (and the
  shaping settings it changed), so the file keeps every segment's settings; read by gin, the last
  binding of a name wins, i.e. the current segment's value.
  """
  path = Path(work_dir) / OPERATIVE
  if iteration is None or not path.exists():
    path.write_text(text)
    return
  old = path.read_text()
  last = old.rsplit(_SEGMENT, 1)[1].split("\n", 1)[1] if _SEGMENT in old else old
  if last == text:
    return
  what = f" with changed settings ({FLAG}): {', '.join(changed)}" if changed else ""
  path.write_text(f"{old.rstrip(chr(10))}\n\n{_SEGMENT}{iteration}{what} ----\n{text}")
