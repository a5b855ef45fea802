"""The ablation's data stage: train / validation / held-out problem files, written once.

Splits (the ablation's protocol):
  * train: the bundled train split + MBPP train (task ids 601-974);
  * validation: MBPP validation (511-600), used only by SFT's early stopping. Without MBPP, every
    10th bundled train problem in id order is held back instead (a fixed 10%, out of train);
  * held-out: the bundled test split + the first `heldout_mbpp` MBPP test problems (11-510) by
    task id. Never trained or tuned on;
  * rl_pool: every 16th train problem (in file order): the problems every RL arm trains on, and,
    evaluated greedily at s* = 0 before and after RL, whether an arm learned its own training
    problems (the measure that moves first). Why a pool rather than all of train: an arm's budget
    (40 iterations x 4 problems) draws 160 problems; over the 502 train problems nearly every one
    would be drawn once, and CCCS's curriculum, which moves a problem's start point earlier only
    after its rollouts pass, could never advance. Over the 32 of the pool each is drawn ~5 times.
    SFT still learns from all of train.
Beside them, `heldout_prompts.jsonl` holds the held-out problems without their solutions: with
train and validation it is what an ablation's output vocabulary is built from (the ids the
problems' texts use; the held-out solutions stay unseen).

MBPP is a file the user supplies (`--mbpp`, the mbpp.jsonl or its folder); the repository does
not ship it. Without it the ablation runs on the bundled set alone.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError

FILES = ("train", "validation", "heldout", "rl_pool")
VALIDATION_EVERY = 10  # without MBPP: every 10th bundled train problem is validation
RL_POOL_EVERY = 16  # the RL pool: every 16th train problem (32 of 502 with MBPP)
HELDOUT_PROMPTS = "heldout_prompts.jsonl"


def mbpp_file(path: str) -> Path:
  """The mbpp.jsonl named by --mbpp (the file, or a folder holding it)."""
  p = Path(path)
  if p.is_dir():
    p = p / "mbpp.jsonl"
  if not p.is_file():
    raise UserError(f"--mbpp {path}: no such file (expected mbpp.jsonl or a folder holding it)")
  return p


def _task_id(p: Problem) -> int:
  return int(p.id.rsplit("/", 1)[-1])


def mbpp_splits(path: str) -> dict[str, list[Problem]]:
  """MBPP problems by split name ('train', 'validation', 'test'), each sorted by task id."""
  from stepcoder_jax.data import load
  from stepcoder_jax.data.builders import mbpp

  out: dict[str, list[Problem]] = {name: [] for name in mbpp.SPLITS}
  f = mbpp_file(path)
  for p in load.load_problem_file(str(f)):
    split = mbpp.split_of(_task_id(p))
    if split is None:
      raise UserError(f"--mbpp {f}: record {p.id!r}: task id outside 1-974")
    out[split].append(p)
  return {k: sorted(v, key=_task_id) for k, v in out.items()}


def builtin_splits() -> dict[str, list[Problem]]:
  """The bundled problems by split, with the split rule of the `stepcoder_builtin` dataset."""
  from stepcoder_jax.data.builders import _base, stepcoder_builtin as sb

  return _base.split_by_suffix(sb.read_builtin(), sb.TEST_MODULUS)


def build(mbpp: str | None, heldout_mbpp: int) -> dict[str, list[Problem]]:
  """{'train', 'validation', 'heldout', 'rl_pool'} -> problems, as the module docstring
  describes."""
  if heldout_mbpp < 0:
    raise UserError(f"--heldout_mbpp: must be >= 0, got {heldout_mbpp}")
  bundled = builtin_splits()
  if mbpp is None:
    ordered = sorted(bundled["train"], key=lambda p: p.id)
    val = [p for i, p in enumerate(ordered) if i % VALIDATION_EVERY == 0]
    val_ids = {p.id for p in val}
    out = {
      "train": [p for p in bundled["train"] if p.id not in val_ids],
      "validation": val,
      "heldout": bundled["test"],
    }
  else:
    m = mbpp_splits(mbpp)
    out = {
      "train": bundled["train"] + m["train"],
      "validation": m["validation"],
      "heldout": bundled["test"] + m["test"][:heldout_mbpp],
    }
  out["rl_pool"] = out["train"][::RL_POOL_EVERY]
  return out


def write(data_dir: Path, splits: dict[str, list[Problem]]) -> dict[str, int]:
  """`<name>.jsonl` (Problem records) per split; returns the problem count of each."""
  data_dir.mkdir(parents=True, exist_ok=True)
  for name in FILES:
    if not splits[name]:
      raise UserError(f"ablate: the {name} split has no problems")
    tmp = data_dir / f"{name}.jsonl.tmp"
    tmp.write_text("".join(p.to_json() + "\n" for p in splits[name]), encoding="utf-8")
    tmp.replace(data_dir / f"{name}.jsonl")
  prompts = [dataclasses.replace(p, canonical_solution="") for p in splits["heldout"]]
  (data_dir / HELDOUT_PROMPTS).write_text(
    "".join(p.to_json() + "\n" for p in prompts), encoding="utf-8"
  )
  return {name: len(splits[name]) for name in FILES}


def settings_of(mbpp: str | None, heldout_mbpp: int) -> dict:
  """What the data files depend on, recorded in data/DONE.json and checked on a resume."""
  return {
    "mbpp": str(mbpp_file(mbpp).resolve()) if mbpp else None,
    "heldout_mbpp": heldout_mbpp if mbpp else None,
    "rl_pool_every": RL_POOL_EVERY,
  }


def check_resume(done: dict, settings: dict, data_dir: Path) -> None:
  """A resumed ablation must read the same data as the finished data stage."""
  before = done.get("settings")
  if before is not None and before != settings:
    raise UserError(
      f"ablate: {data_dir} was written with {json.dumps(before)}, this run asks for "
      f"{json.dumps(settings)}; use the same --mbpp/--heldout_mbpp or a new --out"
    )
