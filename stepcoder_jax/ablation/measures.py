"""Per-problem measures of finished evaluations and their paired differences, as report text.

The ablation's report (ablation/report.py), its control and tuning sections and the demo's report
(runs/demo.py) read evaluations through here, so every report computes a measure and its
interval the same way: a paired bootstrap over problems (stepcoder_jax/stats.py).

Per-problem measures, each from one evaluation of the ablation's plan (ablation/plan.py; layout
of the files: runs/evaluation.py); a problem whose value is null (e.g. no curriculum for the
subtask) is left out of that measure:
  greedy pass@1       evals/<model>/greedy/eval.json, the greedy sample passes every test
  pass@1 (n samples)  evals/<model>/sampled/eval.json, c / n (unbiased pass@1 of the problem)
  tests share         evals/<model>/greedy/eval.json, share of unit tests the greedy sample passes
  subtask pass rate   evals/<model>/greedy/eval_subtask.json, the greedy completion from the
                      last CCCS start point passes
  RL-pool pass@1      evals/<model>/probe/eval.json, greedy at s* = 0 on the RL pool, the
                      TRAINING problems every arm trains on (ablation/data.py): whether an
                      arm learned what it trained on (not held out)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from stepcoder_jax import stats

ALL = "all"


def _flag(v) -> float | None:
  return None if v is None else float(bool(v))


# (measure, eval kind (directory), file, per-problem value from that file's record)
MEASURES: tuple[tuple[str, str, str, Callable[[dict], float | None]], ...] = (
  ("greedy pass@1", "greedy", "eval.json", lambda r: _flag(r.get("greedy_passed"))),
  ("pass@1 (n samples)", "sampled", "eval.json", lambda r: r["c"] / r["n"] if r["n"] else None),
  ("tests share", "greedy", "eval.json", lambda r: r.get("tests_share")),
  ("subtask pass rate", "greedy", "eval_subtask.json", lambda r: _flag(r.get("subtask_passed"))),
  ("RL-pool pass@1", "probe", "eval.json", lambda r: _flag(r.get("greedy_passed"))),
)


def eval_records(path: Path) -> list[dict] | None:
  """The per-problem records of a finished evaluation's JSON (None when not finished)."""
  if not (path.parent / "DONE.json").is_file() or not path.is_file():
    return None
  return json.loads(path.read_text(encoding="utf-8")).get("problems")


def _group(record: dict) -> str:
  """A problem's column: its difficulty, else its dataset (MBPP has no difficulty levels)."""
  level = record.get("difficulty")
  if level and level != "unknown":  # evaluation writes 'unknown' for a record without one
    return level
  return record['problem_id'].split('/')[0]


def measure_values(evals_dir: Path, model: str) -> dict[str, dict[str, tuple[float, str]]]:
  """measure -> {problem_id: (value, difficulty)} for one model's finished evaluations."""
  out = {}
  for name, kind, file, value in MEASURES:
    records = eval_records(evals_dir / model / kind / file)
    if records is None:
      continue
    try:
      vals = {r["problem_id"]: (value(r), _group(r)) for r in records}
    except KeyError:  # an evaluation written without this measure's field
      continue
    out[name] = {pid: v for pid, v in vals.items() if v[0] is not None}
  return out


def by_difficulty(values: dict[str, tuple[float, str]]) -> dict[str, list[str]]:
  """'all' and each difficulty -> problem ids (in a fixed order)."""
  ids = sorted(values)
  out = {ALL: ids}
  for pid in ids:
    out.setdefault(values[pid][1], []).append(pid)
  return out


def model_table(measure: str, per_model: dict[str, dict]) -> str:
  """Markdown: one row per model, one column per difficulty group; mean [95% CI] in %."""
  rows = {m: v[measure] for m, v in per_model.items() if measure in v}
  if not rows:
    return f"_{measure}: no finished evaluation yet._"
  groups = list(dict.fromkeys(g for v in rows.values() for g in by_difficulty(v)))
  first = next(iter(rows.values()))
  counts = {g: len(ids) for g, ids in by_difficulty(first).items()}
  head = "| model | " + " | ".join(f"{g} ({counts.get(g, '?')})" for g in groups) + " |"
  lines = [head, "|---|" + "---:|" * len(groups)]
  for model, values in rows.items():
    by = by_difficulty(values)
    cells = [
      stats.mean_ci([values[p][0] for p in by[g]]).text(100, 1) if g in by else "n/a"
      for g in groups
    ]
    lines.append(f"| {model} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def paired(
  measure: str, per_model: dict[str, dict], arm: str, baseline: str
) -> stats.Estimate | None:
  """Paired difference arm - baseline on the problems both were evaluated on."""
  a, b = per_model.get(arm, {}).get(measure), per_model.get(baseline, {}).get(measure)
  if a is None or b is None or arm == baseline:
    return None
  return paired_values(a, b)


def paired_values(
  a: dict[str, tuple[float, str]], b: dict[str, tuple[float, str]]
) -> stats.Estimate:
  """Paired difference a - b of two models' per-problem values, on the problems both have."""
  common = sorted(set(a) & set(b))
  return stats.paired_diff_ci([a[p][0] for p in common], [b[p][0] for p in common])


def diff_cell(d: stats.Estimate | None) -> str:
  """'+1.2 [-0.5, +3.0]' in percentage points, ' *' when the interval excludes 0; 'n/a'."""
  if d is None:
    return "n/a"
  return d.text(100, 1, signed=True) + (" *" if d.excludes_zero else "")


def evidence(diffs: list[tuple[str, stats.Estimate | None]]) -> list[str]:
  """The clauses of a generated sentence: which named paired differences have an interval that
  excludes 0 and which do not (no evidence either way at this many problems)."""
  clear, unclear = [], []
  for name, d in diffs:
    if d is None or d.n == 0:
      continue
    # Each measure counts its own problems (the subtask and the RL pool have fewer).
    item = f"{name} {d.text(100, 1, signed=True)} pp ({d.n} problems: {d.up} up, {d.down} down)"
    (clear if d.excludes_zero else unclear).append(item)
  parts = []
  if clear:
    parts.append("intervals exclude 0 for " + "; ".join(clear))
  if unclear:
    parts.append(
      "intervals include 0, no evidence of a difference at this scale, for " + "; ".join(unclear)
    )
  return parts


def clauses(parts: list[str]) -> str:
  """Clauses as sentences: each capitalized, joined by '. ', with a final period."""
  return ". ".join(p[0].upper() + p[1:] for p in parts) + "."
