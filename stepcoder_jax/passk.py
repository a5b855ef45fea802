"""pass@k by difficulty: the unbiased estimator of Chen et al. (2021) and table writers.

This is the pure part of evaluation (no jax): given, per problem, how many of n samples passed
every test, estimate pass@k and aggregate by difficulty. Sampling and judging happen around it
(commands/evaluate.py).

Estimator: for one problem with n samples of which c pass,
    pass@k = 1 - C(n - c, k) / C(n, k),
the probability that at least one of k samples drawn without replacement from the n passes. It is
unbiased for the pass probability of k fresh samples, unlike 1 - (1 - c/n)^k. The ratio of
binomials is computed as a product prod_{i=n-c+1..n} (1 - k / i) to stay exact-ish and free of
overflow for large n.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

ALL = "all"
TESTS_PASSED = "tests passed"


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k for one problem from n samples with c correct."""
  if n <= 0 or not 0 <= c <= n:
    raise ValueError(f"pass_at_k: need 0 <= c <= n and n > 0, got n={n}, c={c}")
  if k <= 0:
    raise ValueError(f"pass_at_k: k must be positive, got {k}")
  if k > n:
    raise ValueError(f"pass_at_k: k={k} exceeds the n={n} samples")
  if n - c < k:  # every k-subset contains a correct sample
    return 1.0
  prob_all_fail = 1.0
  for i in range(n - c + 1, n + 1):
    prob_all_fail *= 1.0 - k / i
  return 1.0 - prob_all_fail


@dataclasses.dataclass(frozen=True)
class ProblemResult:
  """Outcome of sampling one problem: n samples, c of them passed every test.

  `greedy_passed` is the greedy (temperature 0) sample's verdict, None if not run.
  `tests_share` is the share of the problem's unit tests passed (a measure that moves before
  whole-problem passes do), None if not measured.
  """

  problem_id: str
  difficulty: str
  n: int
  c: int
  greedy_passed: bool | None = None
  tests_share: float | None = None


def aggregate(results: Iterable[ProblemResult], ks: Sequence[int]) -> dict[str, dict]:
  """Mean pass@k per difficulty and over all problems.

  Returns {difficulty: {"problems": count, "pass@k": mean, ..., "greedy pass@1": mean}}, with
  "all" last (and "tests passed": the mean `tests_share`, when measured); difficulties in
  first-seen order. pass@k for k larger than a problem's n is not
  defined and is reported as None for any group containing such a problem.
  """
  groups: dict[str, list[ProblemResult]] = {}
  results = list(results)
  for r in results:
    groups.setdefault(r.difficulty or "unknown", []).append(r)
  groups[ALL] = results
  table: dict[str, dict] = {}
  for name, rs in groups.items():
    row: dict[str, float | int | None] = {"problems": len(rs)}
    for k in ks:
      if not rs or any(r.n < k for r in rs):
        row[f"pass@{k}"] = None
      else:
        row[f"pass@{k}"] = sum(pass_at_k(r.n, r.c, k) for r in rs) / len(rs)
    greedy = [r.greedy_passed for r in rs if r.greedy_passed is not None]
    if greedy:
      row["greedy pass@1"] = sum(map(bool, greedy)) / len(greedy)
    shares = [r.tests_share for r in rs if r.tests_share is not None]
    if shares:
      row[TESTS_PASSED] = sum(shares) / len(shares)
    table[name] = row
  return table


def _columns(table: Mapping[str, Mapping]) -> list[str]:
  cols: list[str] = []
  for row in table.values():
    for c in row:
      if c not in cols:
        cols.append(c)
  return cols


def to_markdown(table: Mapping[str, Mapping], title: str | None = None) -> str:
  """A markdown table: one row per difficulty, percentages with one decimal."""
  cols = _columns(table)
  lines = []
  if title:
    lines += [f"### {title}", ""]
  lines.append("| difficulty | " + " | ".join(cols) + " |")
  lines.append("|---|" + "|".join("---:" for _ in cols) + "|")
  for name, row in table.items():
    cells = []
    for c in cols:
      v = row.get(c)
      if v is None:
        cells.append("-")
      elif c == "problems":
        cells.append(str(int(v)))
      else:
        cells.append(f"{100.0 * float(v):.1f}")
    label = f"**{name}**" if name == ALL else name
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  lines.append("")
  lines.append("pass@k in %, unbiased estimator (Chen et al., 2021).")
  if TESTS_PASSED in cols:
    lines.append("tests passed: mean share of each problem's unit tests passed, in %.")
  return "\n".join(lines) + "\n"


def write_tables(
  table: Mapping[str, Mapping],
  out_prefix: str | Path,
  *,
  title: str | None = None,
  extra: Mapping | None = None,
) -> tuple[Path, Path]:
  """Write `<prefix>.md` and `<prefix>.json` (the JSON also carries `extra`, e.g. settings)."""
  prefix = Path(out_prefix)
  prefix.parent.mkdir(parents=True, exist_ok=True)
  md = prefix.with_name(prefix.name + ".md")
  js = prefix.with_name(prefix.name + ".json")
  md.write_text(to_markdown(table, title))
  payload = {"table": table}
  if extra:
    payload.update({k: v for k, v in extra.items() if k != "table"})
  js.write_text(json.dumps(payload, indent=1, sort_keys=False, default=_json_default))
  return md, js


def _json_default(x):
  if dataclasses.is_dataclass(x):
    return dataclasses.asdict(x)
  if isinstance(x, float) and not math.isfinite(x):
    return None
  return str(x)


def read_table(path: str | Path) -> dict[str, dict]:
  return json.loads(Path(path).read_text())["table"]
