"""`ablate --tune`: RL settings chosen on validation, never on the held-out set.

Issue 13's rule: if RL does not beat SFT, investigate (learning rates, KL coefficient, ...) on the
validation split and report what was tried. A tune point is a name and gin bindings on top of
one arm (`--tune_arm`, default stepcoder): it trains like that arm on the RL pool with the
bindings added, and is evaluated greedily (with the subtask measure) on the validation problems
and at s* = 0 on the RL pool. The SFT model is evaluated the same way, the baseline of every
point. A point without bindings (`--tune default=`) is the arm itself: it reuses the arm's
training and model, so the arm's own run costs no second training.

Layout under --out:
  tune/<name>/TUNE.json                 the point's arm and bindings (a name is never reused with
                                        other bindings)
  tune/<name>/{train,model}/            its training run and final policy (a point with bindings)
  tune/evals/<model>/{greedy,probe}/    validation and RL-pool evaluations of sft and each point
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from stepcoder_jax import stats
from stepcoder_jax.ablation.measures import diff_cell, measure_values, paired
from stepcoder_jax.errors import UserError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
KINDS = ("greedy", "probe")  # no sampled evaluation: tuning needs a ranking, not pass@1 from n


@dataclasses.dataclass(frozen=True)
class TunePoint:
  """One setting tried on validation: `name` and gin bindings added to the tuned arm's gin."""

  name: str
  bindings: tuple[str, ...] = ()


def parse(spec: str) -> TunePoint:
  """'NAME=BINDING[;BINDING...]' -> TunePoint; 'NAME=' is the arm's own settings."""
  name, sep, rest = spec.partition("=")
  if not sep or not NAME.match(name) or name in ("evals", "sft"):
    raise UserError(
      f"--tune {spec!r}: expected NAME=BINDING[;BINDING...] with NAME of letters, "
      f"digits, '_', '.', '-' (not 'evals' or 'sft'), e.g. "
      f"lr1e-5=ppo.policy_lr=1e-5"
    )
  bindings = tuple(b.strip() for b in rest.split(";") if b.strip())
  for b in bindings:
    if "=" not in b or not b.split("=", 1)[0].strip():
      raise UserError(f"--tune {spec!r}: {b!r} is not a gin binding NAME.PARAM=VALUE")
  return TunePoint(name, bindings)


def check(points: tuple[TunePoint, ...], out: Path) -> None:
  """Names unique; a name already on disk must carry the same bindings."""
  names = [p.name for p in points]
  if len(set(names)) != len(names):
    raise UserError(f"--tune: a name is given twice in {' '.join(names)}")
  for p in points:
    f = out / "tune" / p.name / "TUNE.json"
    if f.is_file():
      before = json.loads(f.read_text(encoding="utf-8"))
      if tuple(before.get("bindings", ())) != p.bindings:
        raise UserError(
          f"--tune {p.name}: {f.parent} was run with {before.get('bindings')}, "
          f"this run asks for {list(p.bindings)}; use another name"
        )


def record(points: tuple[TunePoint, ...], out: Path, arm: str) -> None:
  """Write each point's TUNE.json (before its stages run)."""
  for p in points:
    d = out / "tune" / p.name
    d.mkdir(parents=True, exist_ok=True)
    (d / "TUNE.json").write_text(
      json.dumps({"arm": arm, "bindings": list(p.bindings)}, indent=1), encoding="utf-8"
    )


def evals_dir(out: Path) -> Path:
  return out / "tune" / "evals"


def model_dir(out: Path, arm: str, p: TunePoint) -> Path:
  """The point's final policy: the arm's own when the point adds nothing."""
  return out / "tune" / p.name / "model" if p.bindings else out / "arms" / arm / "model"


def train_dir(out: Path, arm: str, p: TunePoint) -> Path:
  return out / "tune" / p.name / "train" if p.bindings else out / "arms" / arm / "train"


def points_on_disk(out: Path) -> list[tuple[str, list[str]]]:
  """(name, bindings) of every point recorded under tune/, by name."""
  return [
    (f.parent.name, json.loads(f.read_text(encoding="utf-8")).get("bindings", []))
    for f in sorted((out / "tune").glob("*/TUNE.json"))
  ]


def section(out: Path, measures: list[str]) -> list[str]:
  """The report's tuning section: per point, each validation measure and its paired difference
  against SFT on the same problems ('*': the 95% interval excludes 0)."""
  points = points_on_disk(out)
  if not points:
    return []
  per_model = {m: measure_values(evals_dir(out), m) for m in ["sft"] + [n for n, _ in points]}
  cols = [m for m in measures if any(m in v for v in per_model.values())]
  lines = [
    "## Tuning on validation (the held-out set is never used here)",
    "",
    "Each point trains like the tuned arm with the bindings shown; measures on the "
    "validation problems (RL-pool pass@1: the training problems at s* = 0). "
    "Cells: value [95% CI] in %, then after ';' the paired difference from SFT in pp "
    "('*': its interval excludes 0).",
    "",
  ]
  if not cols:
    return lines + ["_no finished tuning evaluation yet._", ""]
  lines += ["| point | bindings | " + " | ".join(cols) + " |", "|---|---|" + "---:|" * len(cols)]
  for name, bindings in [("sft", None)] + points:
    cells = []
    for m in cols:
      vals = per_model[name].get(m)
      if vals is None:
        cells.append("n/a")
        continue
      cell = stats.mean_ci([v for v, _ in vals.values()]).text(100, 1)
      if name != "sft":
        cell += "; " + diff_cell(paired(m, per_model, name, "sft"))
      cells.append(cell)
    shown = (
      "the SFT model"
      if bindings is None
      else "; ".join(f"`{b}`" for b in bindings) or "the arm as is"
    )
    lines.append(f"| {name} | {shown} | " + " | ".join(cells) + " |")
  return lines + [""] + training_table(out, points)


TAIL = 5  # iterations the training table averages at the end of a run


def training_table(out: Path, points: list[tuple[str, list[str]]]) -> list[str]:
  """How each point's training went (a point that diverged shows it here, evaluated or not):
  iterations logged, the rollout pass rate over all of them, and the last TAIL iterations' KL to
  the reference, truncation and compile-error rates."""
  from stepcoder_jax.metrics import read_jsonl

  lines = [
    f"Training of each point (KL, truncated and compile errors: mean of its last {TAIL} "
    "iterations; pass rate: all rollouts at the current stage):",
    "",
    "| point | iterations | finished | rollout pass rate | KL to SFT (nats) | truncated "
    "| compile errors |",
    "|---|---:|---|---:|---:|---:|---:|",
  ]
  for name, bindings in points:
    arm = json.loads((out / "tune" / name / "TUNE.json").read_text(encoding="utf-8"))["arm"]
    d = train_dir(out, arm, TunePoint(name, tuple(bindings)))
    f = d / "metrics.jsonl"
    rows = sorted(
      {r["step"]: r for r in (read_jsonl(f) if f.is_file() else []) if "step" in r}.items()
    )
    rows = [r for _, r in rows]
    if not rows:
      lines.append(f"| {name} | 0 | no | n/a | n/a | n/a | n/a |")
      continue

    def mean(key, rs):
      vals = [r[key] for r in rs if isinstance(r.get(key), (int, float))]
      return sum(vals) / len(vals) if vals else float("nan")

    tail = rows[-TAIL:]
    lines.append(
      f"| {name} | {len(rows)} | {'yes' if (d / 'DONE.json').is_file() else 'no'} "
      f"| {mean('pass_rate', rows):.1%} | {mean('ppo/ref_kl', tail):.1f} "
      f"| {mean('truncated_rate', tail):.0%} "
      f"| {mean('outcome/compile_error', tail):.0%} |"
    )
  return lines + [""]
