"""The ablation's report: held-out measures with paired bootstrap intervals, budgets, curves.

Reads whatever stages of runs/ablation.py have finished (the report runs after every
invocation), so a partial ablation gives a partial report that says what is missing.

Per-problem measures, each from one evaluation of runs/ablation.py:
  greedy pass@1       greedy eval, the greedy sample passes every test (0/1)
  pass@1 (n samples)  sampled eval, c / n (the unbiased pass@1 estimate of that problem)
  tests share         greedy eval, share of the problem's unit tests the greedy sample passes
  subtask pass rate   subtask eval, the completion from the last CCCS start point passes (0/1)
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

from stepcoder_jax import stats
from stepcoder_jax.metrics import read_jsonl

ALL = "all"
# (measure, eval kind, per-problem value from that eval's record)
MEASURES: tuple[tuple[str, str, Callable[[dict], float]], ...] = (
    ("greedy pass@1", "greedy", lambda r: float(bool(r.get("greedy_passed")))),
    ("pass@1 (n samples)", "sampled", lambda r: r["c"] / r["n"] if r.get("n") else 0.0),
    ("tests share", "greedy", lambda r: float(r["tests_share"])),
    ("subtask pass rate", "subtask",
     lambda r: float(bool(r.get("subtask_passed", r.get("greedy_passed"))))),
)
BASELINES = ("sft", "ppo")  # every arm is compared with these, paired on the same problems


def _eval_records(directory: Path) -> dict[str, dict] | None:
  """problem_id -> per-problem record of a finished evaluation (None when not finished).

  The record gets `tests_share` from the samples file when the evaluation did not write one
  (the share of tests passed, averaged over the problem's samples).
  """
  if not (directory / "DONE.json").is_file():
    return None
  for f in sorted(directory.glob("*.json")):
    if f.name == "DONE.json":
      continue
    payload = json.loads(f.read_text(encoding="utf-8"))
    if isinstance(payload, dict) and isinstance(payload.get("problems"), list):
      records = {r["problem_id"]: dict(r) for r in payload["problems"]}
      samples = f.with_name(f.stem + "_samples.jsonl")
      if samples.is_file() and any("tests_share" not in r for r in records.values()):
        shares: dict[str, list[float]] = {}
        for row in read_jsonl(samples):
          total = row.get("tests_total") or 0
          shares.setdefault(row["problem_id"], []).append(
              row.get("tests_passed", 0) / total if total else 0.0)
        for pid, r in records.items():
          r.setdefault("tests_share", sum(shares.get(pid, [0.0])) / len(shares.get(pid, [0.0])))
      return records
  return None


def measure_values(evals_dir: Path, model: str) -> dict[str, dict[str, tuple[float, str]]]:
  """measure -> {problem_id: (value, difficulty)} for one model's finished evaluations."""
  out = {}
  for name, kind, value in MEASURES:
    records = _eval_records(evals_dir / model / kind)
    if records is None:
      continue
    try:
      out[name] = {pid: (value(r), r.get("difficulty") or "unknown") for pid, r in records.items()}
    except KeyError:  # an evaluation written without this measure's field
      continue
  return out


def _groups(values: dict[str, tuple[float, str]]) -> dict[str, list[str]]:
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
  groups = list(dict.fromkeys(g for v in rows.values() for g in _groups(v)))
  first = next(iter(rows.values()))
  counts = {g: len(ids) for g, ids in _groups(first).items()}
  head = "| model | " + " | ".join(f"{g} ({counts.get(g, '?')})" for g in groups) + " |"
  lines = [head, "|---|" + "---:|" * len(groups)]
  for model, values in rows.items():
    by = _groups(values)
    cells = [stats.mean_ci([values[p][0] for p in by[g]]).text(100, 1) if g in by else "n/a"
             for g in groups]
    lines.append(f"| {model} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def paired(measure: str, per_model: dict[str, dict], arm: str, baseline: str
           ) -> stats.Estimate | None:
  """Paired difference arm - baseline on the problems both were evaluated on."""
  a, b = per_model.get(arm, {}).get(measure), per_model.get(baseline, {}).get(measure)
  if a is None or b is None or arm == baseline:
    return None
  common = sorted(set(a) & set(b))
  return stats.paired_diff_ci([a[p][0] for p in common], [b[p][0] for p in common])


def diff_table(arms: list[str], per_model: dict[str, dict]) -> str:
  """Markdown: each arm minus SFT and minus PPO per measure, in percentage points; '*' marks an
  interval that excludes 0."""
  cols = [(m, base) for m, _, _ in MEASURES for base in BASELINES]
  head = "| arm | " + " | ".join(f"{m} vs {base}" for m, base in cols) + " |"
  lines = [head, "|---|" + "---:|" * len(cols)]
  for arm in arms:
    cells = []
    for m, base in cols:
      d = paired(m, per_model, arm, base)
      cells.append("n/a" if d is None else d.text(100, 1, signed=True)
                   + (" *" if d.excludes_zero else ""))
    lines.append(f"| {arm} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def sentence(arm: str, per_model: dict[str, dict]) -> str:
  """What the numbers of one arm show, generated from them (no hand-written placeholder)."""
  parts = []
  for m, _, _ in MEASURES:
    for base in BASELINES:
      d = paired(m, per_model, arm, base)
      if d is None or d.n == 0:
        continue
      what = (f"{m} {'above' if d.value > 0 else 'below'} {base} with the interval excluding 0"
              if d.excludes_zero else
              f"{m} vs {base} {d.text(100, 1, signed=True)} pp: interval includes 0, "
              f"no evidence of a difference at this scale")
      if d.excludes_zero:
        what += f" ({d.text(100, 1, signed=True)} pp on {d.n} problems)"
      parts.append(what)
  if not parts:
    return f"- **{arm}**: no finished held-out evaluation yet, nothing to compare."
  return f"- **{arm}**: " + "; ".join(parts) + "."


def arm_status(out: Path, arm: str, total: int) -> tuple[str, int]:
  """('done' | 'in progress (iteration i of N)' | 'not run yet', iterations done)."""
  train = out / "arms" / arm / "train"
  rows = read_jsonl(train / "metrics.jsonl") if (train / "metrics.jsonl").is_file() else []
  done_iters = max((int(r.get("step", 0)) for r in rows), default=0)
  evals_done = all((out / "evals" / arm / k / "DONE.json").is_file() for k in ("greedy", "sampled"))
  if (train / "DONE.json").is_file() and evals_done:
    return "done", done_iters
  if (train / "DONE.json").is_file():
    return "trained, evaluation in progress", done_iters
  if rows or train.is_dir():
    return f"in progress (iteration {done_iters} of {total})", done_iters
  return "not run yet", 0


def _wall(path: Path) -> float | None:
  f = path / "DONE.json"
  if not f.is_file():
    return None
  return float(json.loads(f.read_text(encoding="utf-8")).get("wall_s", 0.0))


def budget_table(out: Path, arms: list[str]) -> str:
  """Markdown: per arm its status, iterations, rollouts and wall times (from DONE.json)."""
  from stepcoder_jax.rl.config import TrainConfig

  cfg = TrainConfig()
  per_it = cfg.problems_per_iteration * cfg.samples_per_problem
  lines = [f"Budget of every arm: {cfg.num_iterations} iterations x "
           f"{cfg.problems_per_iteration} problems x {cfg.samples_per_problem} samples = "
           f"{cfg.num_iterations * per_it} rollouts, seed {cfg.seed}, max_new_tokens "
           f"{cfg.max_new_tokens}.", "",
           "| arm | status | iterations | rollouts | train wall | eval wall |",
           "|---|---|---:|---:|---:|---:|"]
  for arm in arms:
    status, its = arm_status(out, arm, cfg.num_iterations)
    train = _wall(out / "arms" / arm / "train")
    evals = [w for k in ("greedy", "sampled", "subtask")
             if (w := _wall(out / "evals" / arm / k)) is not None]
    lines.append(f"| {arm} | {status} | {its} | {its * per_it} | "
                 f"{'-' if train is None else f'{train / 60:.1f} min'} | "
                 f"{f'{sum(evals) / 60:.1f} min' if evals else '-'} |")
  return "\n".join(lines)


def _first_line(cmd: list[str]) -> str:
  try:
    return subprocess.run(cmd, capture_output=True, text=True, check=False,
                          timeout=10).stdout.strip().splitlines()[0]
  except (OSError, IndexError, subprocess.TimeoutExpired):
    return "unknown"


def machine() -> dict[str, str]:
  """The facts a reader needs to place the numbers: commit, OS, CPU, cores, RAM, date."""
  cpu, ram = platform.processor() or "unknown", "unknown"
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
    kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines()
                  if l.startswith("MemTotal")).split()[1])
    ram = f"{kb / 2**20:.1f} GiB"
  except (OSError, StopIteration, ValueError):
    pass
  repo = Path(__file__).resolve().parents[2]
  commit = _first_line(["git", "-C", str(repo), "rev-parse", "HEAD"])
  dirty = _first_line(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"])
  return {"git commit": commit + (" (with uncommitted changes)" if dirty != "unknown" else ""),
          "uname -a": " ".join(platform.uname()), "CPU": cpu,
          "cores": str(os.cpu_count()), "RAM": ram, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def copy_metrics(out: Path, arms: list[str]) -> None:
  """metrics/<arm>.jsonl: each arm's training log as it stands."""
  (out / "metrics").mkdir(parents=True, exist_ok=True)
  for arm in arms:
    src = out / "arms" / arm / "train" / "metrics.jsonl"
    if src.is_file():
      shutil.copyfile(src, out / "metrics" / f"{arm}.jsonl")


def write_report(s, stages) -> Path:
  """report.md, metrics/<arm>.jsonl and plots/*.png from the finished stages of ablation `s`."""
  from stepcoder_jax.runs import ablation_plots

  out = Path(s.out)
  arms = list(s.arms)
  models = ["base", "sft", *arms]
  per_model = {m: measure_values(out / "evals", m) for m in models}
  copy_metrics(out, arms)
  plots = ablation_plots.write_plots(out, per_model, arms)
  data = json.loads((out / "data" / "DONE.json").read_text()).get("counts", {}) \
      if (out / "data" / "DONE.json").is_file() else {}
  pending = [st.name for st in stages if not (Path(st.out) / "DONE.json").is_file()]
  text = [
      "# StepCoder ablation: held-out measures with paired 95% bootstrap intervals", "",
      f"Problems: {data}. Held-out = bundled test split"
      + (f" + the first {s.heldout_mbpp} MBPP test problems" if s.mbpp else
         " only (no --mbpp: the ablation ran on the bundled set alone)") + ".",
      "Intervals: percentile bootstrap over problems, "
      f"{stats.RESAMPLES} resamples, seed {stats.SEED}; differences are paired (the same "
      "resampled problems for both models). Values in %, differences in percentage points.", "",
      f"Stages not finished: {', '.join(pending) if pending else 'none'}.", ""]
  for m, kind, _ in MEASURES:
    text += [f"## {m} ({kind} evaluation)", "", model_table(m, per_model), ""]
  text += ["## Paired differences (arm minus SFT, arm minus vanilla PPO)", "",
           "'*': the 95% interval excludes 0.", "", diff_table(arms, per_model), "",
           "## What the numbers show", "", *[sentence(a, per_model) for a in arms], "",
           "## Budget", "", budget_table(out, arms), "",
           "## Plots", "", *[f"- `{p.relative_to(out)}`" for p in plots], "",
           "## Run", "", f"- command: `{s.command_line}`",
           *[f"- {k}: {v}" for k, v in machine().items()], ""]
  report = out / "report.md"
  report.write_text("\n".join(text), encoding="utf-8")
  return report
