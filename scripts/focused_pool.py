"""Selection and report of scripts/focused_pool.sh (a diagnostic beside the ablation).

focused_pool.py select EVAL_JSON POOL_JSONL OUT_JSONL   the pool: problems SFT solved >= once
focused_pool.py report OUT_DIR                          SFT vs the trained arm, paired
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from stepcoder_jax import stats

MIN_POOL = 8  # the ablation draws 4 problems per iteration; 8 keeps each draw a choice
PER_ITER = 8  # rollouts per iteration in ablation_gemma.gin: 4 problems x 2 samples


def select(eval_json: str, pool_jsonl: str, out_jsonl: str) -> None:
  """Keep the problems with at least one passing sample; when fewer than MIN_POOL, add the next
  ones by the share of unit tests passed (partial signal), so the pool has MIN_POOL problems."""
  records = json.loads(Path(eval_json).read_text())["problems"]
  ranked = sorted(records, key=lambda r: (-r["c"], -(r["tests_share"] or 0.0), r["problem_id"]))
  solved = [r for r in ranked if r["c"] > 0]
  keep = {r["problem_id"] for r in ranked[: max(MIN_POOL, len(solved))]}
  lines = [
    l
    for l in Path(pool_jsonl).read_text().splitlines()
    if l.strip() and json.loads(l)["id"] in keep
  ]
  Path(out_jsonl).write_text("\n".join(lines) + "\n")
  print(
    f"{len(solved)} of {len(records)} RL-pool problems solved at least once by SFT "
    f"(8 samples); pool of {len(lines)}: " + ", ".join(sorted(keep))
  )


def _per_problem(path: Path) -> dict[str, dict]:
  return {r["problem_id"]: r for r in json.loads(path.read_text())["problems"]}


def _cell(e: stats.Estimate, diff: bool = False) -> str:
  text = e.text(100, 1, signed=diff)
  if diff:
    text += f" ({e.up} up, {e.down} down){' *' if e.excludes_zero else ''}"
  return text


def _thirds(rows: list[dict], key: str) -> str:
  k = max(1, len(rows) // 3)
  first, last = rows[:k], rows[-k:]
  mean = lambda rs: sum(r.get(key, 0.0) for r in rs) / len(rs)
  return f"{mean(first):.3f} -> {mean(last):.3f}"


def report(out: str) -> None:
  d = Path(out)
  before, after = _per_problem(d / "before/eval.json"), _per_problem(d / "after/eval.json")
  ids = sorted(before)
  b_pass = [before[i]["c"] / before[i]["n"] for i in ids]
  a_pass = [after[i]["c"] / after[i]["n"] for i in ids]
  b_tests = [before[i]["tests_share"] for i in ids]
  a_tests = [after[i]["tests_share"] for i in ids]
  rows = [json.loads(l) for l in (d / "train/metrics.jsonl").read_text().splitlines() if l]
  walls = {s: int((d / "done" / s).read_text()) for s in ("select", "before", "train", "after")}
  print("# Focused pool: StepCoder on the RL-pool problems SFT can solve\n")
  print(
    f"Pool: {len(ids)} problems (`pool.jsonl`). Both models sampled 16 times per problem at "
    "T = 0.8 with seed 1. Cells are % with paired bootstrap 95% intervals over the problems; "
    "'*' means the interval excludes 0.\n"
  )
  print("| measure | SFT | StepCoder (focused) | difference |")
  print("|---|---|---|---|")
  for name, a, b in (("pass@1 (16 samples)", a_pass, b_pass), ("tests share", a_tests, b_tests)):
    print(
      f"| {name} | {_cell(stats.mean_ci(b))} | {_cell(stats.mean_ci(a))} | "
      f"{_cell(stats.paired_diff_ci(a, b), diff=True)} |"
    )
  print("\n| problem | SFT passes /16 | StepCoder passes /16 |")
  print("|---|---|---|")
  for i in ids:
    print(f"| {i} | {before[i]['c']} | {after[i]['c']} |")
  print(
    f"\nTraining ({len(rows)} iterations, first third -> last third): rollout pass rate at "
    f"the current stage {_thirds(rows, 'pass_rate')}, at s* = 0 "
    f"{_thirds(rows, 'pass_rate_final')}, reward {_thirds(rows, 'reward_mean')}, "
    f"KL to SFT {_thirds(rows, 'ppo/ref_kl')}, entropy {_thirds(rows, 'ppo/entropy')}."
  )
  print(
    f"Rollouts that passed: {sum(round(r.get('outcome/passed', 0) * PER_ITER) for r in rows)} "
    f"of {PER_ITER * len(rows)}."
  )
  print("\nWall times (s): " + ", ".join(f"{k} {v}" for k, v in walls.items()))


if __name__ == "__main__":
  commands = {"select": (select, 3), "report": (report, 1)}
  if (
    len(sys.argv) < 2
    or sys.argv[1] not in commands
    or len(sys.argv) - 2 != commands[sys.argv[1]][1]
  ):
    sys.exit("usage: focused_pool.py select EVAL_JSON POOL_JSONL OUT_JSONL | report OUT_DIR")
  commands[sys.argv[1]][0](*sys.argv[2:])
