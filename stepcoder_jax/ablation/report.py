"""The ablation's report: held-out measures with paired bootstrap intervals, budgets, curves.

Reads whatever stages of the plan (ablation/plan.py) have finished (the report runs after every
invocation), so a partial ablation gives a partial report that says what is missing.

The per-problem measures and their paired differences: ablation/measures.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from stepcoder_jax import stats
from stepcoder_jax.ablation import control as ablation_control
from stepcoder_jax.ablation import plots as ablation_plots
from stepcoder_jax.ablation import tune as ablation_tune
from stepcoder_jax.ablation.measures import (
  MEASURES,
  clauses,
  diff_cell,
  evidence,
  measure_values,
  model_table,
  paired,
)
from stepcoder_jax.ablation.plan import EVAL_KINDS
from stepcoder_jax.metrics import read_jsonl

BASELINES = ("sft", "ppo")  # every arm is compared with these, paired on the same problems
CRITIC_FREE = "grpo"  # the critic-free arms' own vanilla: grpo_* arms are also compared with it


def diff_table(
  arms: list[str], per_model: dict[str, dict], baselines: tuple[str, ...] = BASELINES
) -> str:
  """Markdown: each arm minus each baseline (SFT and PPO) per measure, in percentage points; '*'
  marks an interval that excludes 0."""
  cols = [(m, base) for m, *_ in MEASURES for base in baselines]
  head = "| arm | " + " | ".join(f"{m} vs {base}" for m, base in cols) + " |"
  lines = [head, "|---|" + "---:|" * len(cols)]
  for arm in arms:
    cells = []
    for m, base in cols:
      cells.append(diff_cell(paired(m, per_model, arm, base)))
    lines.append(f"| {arm} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def critic_free_section(arms: list[str], per_model: dict[str, dict]) -> list[str]:
  """The critic-free arms with CCCS and/or FGO (grpo_*) minus plain GRPO: the critic-free
  analogue of 'arm minus vanilla PPO', i.e. what CCCS and FGO add without a value model. Empty
  unless plain GRPO and one such arm were both run."""
  others = [a for a in arms if a.startswith(f"{CRITIC_FREE}_")]
  if CRITIC_FREE not in arms or not others or not per_model.get(CRITIC_FREE):
    return []
  lines = [
    "## Critic-free arms minus plain GRPO (what CCCS and FGO add without a value model)",
    "",
    "'*': the 95% interval excludes 0.",
    "",
    diff_table(others, per_model, (CRITIC_FREE,)),
    "",
  ]
  for arm in others:
    parts = evidence(
      [(f"{m} vs {CRITIC_FREE}", paired(m, per_model, arm, CRITIC_FREE)) for m, *_ in MEASURES]
    )
    if parts:
      lines.append(f"- **{arm}**: " + clauses(parts))
  return lines + [""]


def _training_trend(out: Path, arm: str) -> str | None:
  """The rollout pass rate (and entropy) over the first and the last third of the iterations."""
  f = out / "metrics" / f"{arm}.jsonl"
  if not f.is_file():
    return None
  rows = read_jsonl(f)

  def thirds(key: str) -> tuple[float, float, int] | None:
    by_step = {
      r["step"]: r[key] for r in rows if isinstance(r.get(key), (int, float)) and "step" in r
    }
    vals = [by_step[k] for k in sorted(by_step)]
    if len(vals) < 3:
      return None
    third = len(vals) // 3
    return sum(vals[:third]) / third, sum(vals[-third:]) / third, third

  rate = thirds("pass_rate")
  if rate is None:
    return None
  text = (
    f"its rollout pass rate (at the current curriculum stage) went from {rate[0]:.2f} "
    f"over the first {rate[2]} iterations to {rate[1]:.2f} over the last {rate[2]}"
  )
  # A sharper policy (lower entropy) passes more often when sampled even if its greedy answers
  # are no better: the reader needs this next to a sampled pass@1 gain.
  ent = thirds("ppo/entropy")
  if ent is not None:
    text += f", its per-token entropy from {ent[0]:.2f} to {ent[1]:.2f}"
  return text


def sentence(out: Path, arm: str, per_model: dict[str, dict]) -> str:
  """What the numbers of one arm show and do not show, generated from them."""
  parts = evidence(
    [
      (f"{m} vs {base}", paired(m, per_model, arm, base))
      for m, *_ in MEASURES
      for base in BASELINES
    ]
  )
  trend = _training_trend(out, arm)
  if trend:
    parts.append(trend)
  if not parts:
    return f"- **{arm}**: no finished held-out evaluation or training log yet."
  return f"- **{arm}**: " + clauses(parts)


def arm_status(out: Path, arm: str, total: int) -> tuple[str, int]:
  """('done' | 'in progress (iteration i of N)' | 'not run yet', iterations done)."""
  train = out / "arms" / arm / "train"
  rows = read_jsonl(train / "metrics.jsonl") if (train / "metrics.jsonl").is_file() else []
  done_iters = max((int(r.get("step", 0)) for r in rows), default=0)
  evals_done = all((out / "evals" / arm / k / "DONE.json").is_file() for k in EVAL_KINDS)
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
  lines = [
    f"Budget of every arm: {cfg.num_iterations} iterations x "
    f"{cfg.problems_per_iteration} problems x {cfg.samples_per_problem} samples = "
    f"{cfg.num_iterations * per_it} rollouts, seed {cfg.seed}, max_new_tokens "
    f"{cfg.max_new_tokens}.",
    "",
    "| arm | status | iterations | rollouts | train wall | eval wall |",
    "|---|---|---:|---:|---:|---:|",
  ]
  for arm in arms:
    status, its = arm_status(out, arm, cfg.num_iterations)
    train = _wall(out / "arms" / arm / "train")
    evals = [w for k in EVAL_KINDS if (w := _wall(out / "evals" / arm / k)) is not None]
    lines.append(
      f"| {arm} | {status} | {its} | {its * per_it} | "
      f"{'-' if train is None else f'{train / 60:.1f} min'} | "
      f"{f'{sum(evals) / 60:.1f} min' if evals else '-'} |"
    )
  return "\n".join(lines)


def _command_output(cmd: list[str]) -> str:
  try:
    return subprocess.run(
      cmd, capture_output=True, text=True, check=False, timeout=10
    ).stdout.strip()
  except (OSError, subprocess.TimeoutExpired):
    return ""


def machine() -> dict[str, str]:
  """The facts a reader needs to place the numbers: commit, OS, CPU, cores, RAM, date."""
  cpu, ram = "unknown", "unknown"
  try:
    cpu = next(
      l.split(":", 1)[1].strip()
      for l in Path("/proc/cpuinfo").read_text().splitlines()
      if l.startswith("model name")
    )
    kb = int(
      next(
        l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")
      ).split()[1]
    )
    ram = f"{kb / 2**20:.1f} GiB"
  except (OSError, StopIteration, ValueError):
    pass
  repo = str(Path(__file__).resolve().parents[2])
  commit = _command_output(["git", "-C", repo, "rev-parse", "HEAD"]) or "unknown"
  if _command_output(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"]):
    commit += " (with uncommitted changes to tracked files)"
  return {
    "git commit": commit,
    "uname -a": _command_output(["uname", "-a"]) or "unknown",
    "CPU": cpu,
    "cores": str(os.cpu_count()),
    "RAM": ram,
    "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
  }


def copy_metrics(out: Path, arms: list[str]) -> None:
  """metrics/<arm>.jsonl: each arm's training log as it stands."""
  (out / "metrics").mkdir(parents=True, exist_ok=True)
  for arm in arms:
    src = out / "arms" / arm / "train" / "metrics.jsonl"
    if src.is_file():
      shutil.copyfile(src, out / "metrics" / f"{arm}.jsonl")


def _sft_rows(d: Path) -> list[dict]:
  return read_jsonl(d / "metrics.jsonl") if (d / "metrics.jsonl").is_file() else []


def _val_curve(rows: list[dict]) -> list[tuple[int, float]]:
  return [(int(r["step"]), r["sft/val_nll"]) for r in rows if "sft/val_nll" in r]


def sft_trials(out: Path) -> list[tuple[str, str, list[tuple[int, float]]]]:
  """Earlier SFT runs set aside while choosing SFT's settings on validation.

  Each is a directory `sft_trials/<name>/` holding its `metrics.jsonl` and a `TRIAL.json`
  ({"setting": what differed from the kept run, "why": why it was set aside}); the report shows
  their validation curves next to the kept run's, so what was chosen and on what is on record.
  """
  trials = []
  for d in sorted((out / "sft_trials").glob("*/TRIAL.json")):
    meta = json.loads(d.read_text(encoding="utf-8"))
    trials.append(
      (meta.get("setting", d.parent.name), meta.get("why", ""), _val_curve(_sft_rows(d.parent)))
    )
  return trials


def sft_section(out: Path) -> list[str]:
  """The SFT stage: validation NLL per evaluation, the step chosen, and whether it finished;
  beside it the curves of the trials set aside on validation (`sft_trials`)."""
  d = out / "sft"
  rows = _sft_rows(d)
  curve = _val_curve(rows)
  summary = {}
  if (d / "sft_summary.json").is_file():
    summary = json.loads((d / "sft_summary.json").read_text(encoding="utf-8"))
  steps = max((int(r["step"]) for r in rows if "sft/loss" in r), default=0)
  if not curve and not summary:
    return ["_SFT not started yet._"]
  if summary.get("finished"):
    status = (
      f"finished after {summary.get('steps_run')} steps ({summary.get('stop_reason')}); "
      f"the model kept is step {summary.get('best_step')}"
    )
  else:
    status = f"in progress (step {steps} logged; it resumes from its last checkpoint)"
  trials = sft_trials(out)
  lines = [f"Status: {status}.", ""]
  lines += [f"Set aside on validation: {setting} ({why})." for setting, why, _ in trials]
  if trials:
    lines.append("")
  cols = [dict(curve)] + [dict(c) for _, _, c in trials]
  lines += [
    "| step | validation NLL |" + "".join(f" {t} |" for t, _, _ in trials),
    "|---:|---:|" + "---:|" * len(trials),
  ]
  for st in sorted(set().union(*cols)):
    lines.append(f"| {st} |" + "".join(f" {c[st]:.4f} |" if st in c else " |" for c in cols))
  return lines


def sft_vs_base(per_model: dict[str, dict]) -> list[str]:
  """What SFT did to each measure: SFT minus base, paired, in pp ('*': excludes 0)."""
  cells = [(m, paired(m, per_model, "sft", "base")) for m, *_ in MEASURES]
  if all(d is None for _, d in cells):
    return []
  return [
    "SFT minus base, paired over the same problems, in percentage points ('*': the 95% "
    "interval excludes 0):",
    "",
    "| " + " | ".join(m for m, _ in cells) + " |",
    "|" + "---:|" * len(cells),
    "| " + " | ".join(diff_cell(d) for _, d in cells) + " |",
    "",
  ]


# Each figure's alt text and the line under its image in the report.
PLOT_CAPTIONS = {
  "heldout.png": (
    "held-out measures per model",
    "every measure of the tables above, one panel each: bars are the means over problems, "
    "whiskers their 95% intervals.",
  ),
  "training_curves.png": (
    "training curves per arm",
    "each arm's training log (`metrics/<arm>.jsonl`), one panel per quantity: the raw value "
    "of every iteration faint, a moving average on top.",
  ),
  "sharpening.png": (
    "sharpening control",
    "SFT's sampled pass@1 as its temperature falls, beside each arm's at its own temperature "
    "(the table of the sharpening section).",
  ),
}


def plot_links(out: Path, plots: list[Path]) -> list[str]:
  """The figures embedded in report.md (relative links, so the report reads where it is copied),
  each with one line on what it shows."""
  lines = []
  for p in plots:
    rel = p.relative_to(out).as_posix()
    alt, caption = PLOT_CAPTIONS.get(p.name, (p.stem, ""))
    lines += [f"![{alt}]({rel})", "", f"`{rel}`: {caption}".rstrip(": "), ""]
  return lines


def write_report(s, stages) -> Path:
  """report.md, metrics/<arm>.jsonl and plots/*.png from the finished stages of ablation `s`."""
  from stepcoder_jax.runs.config import EvalConfig

  out = Path(s.out)
  arms = list(s.arms)
  models = ["base", "sft", *arms]
  per_model = {m: measure_values(out / "evals", m) for m in models}
  copy_metrics(out, arms)
  temperature = EvalConfig().temperature
  plots = ablation_plots.write_plots(
    out, per_model, arms, sampled=(temperature, s.eval_n), controls=s.controls
  )
  data = (
    json.loads((out / "data" / "DONE.json").read_text()).get("counts", {})
    if (out / "data" / "DONE.json").is_file()
    else {}
  )
  pending = [st.name for st in stages if not (Path(st.out) / "DONE.json").is_file()]
  text = [
    "# StepCoder ablation: held-out measures with paired 95% bootstrap intervals",
    "",
    f"Problems: {data}. Held-out = bundled test split"
    + (
      f" + the first {s.heldout_mbpp} MBPP test problems"
      if s.mbpp
      else " only (no --mbpp: the ablation ran on the bundled set alone)"
    )
    + ".",
    "Intervals: percentile bootstrap over problems, "
    f"{stats.RESAMPLES} resamples, seed {stats.SEED}; differences are paired (the same "
    "resampled problems for both models). Values in %, differences in percentage points.",
    "",
    f"Stages not finished: {', '.join(pending) if pending else 'none'}.",
    "",
    "## SFT (every arm's start and KL reference; chosen on validation NLL)",
    "",
    *sft_section(out),
    "",
    *sft_vs_base(per_model),
    *ablation_tune.section(out, [m for m, *_ in MEASURES]),
  ]
  for m, kind, file, _ in MEASURES:
    text += [f"## {m} (evals/<model>/{kind}/{file})", "", model_table(m, per_model), ""]
  text += [
    "## Paired differences (arm minus SFT, arm minus vanilla PPO)",
    "",
    "'*': the 95% interval excludes 0.",
    "",
    diff_table(arms, per_model),
    "",
    f"This table holds {len(MEASURES) * len(BASELINES)} differences per arm. If no arm "
    "differed from its baseline at all, about 1 interval in 20 would still exclude 0 by "
    "chance, so a lone '*' is weaker evidence than one that agrees with the other "
    "measures and arms; 'up' and 'down' below count the problems that moved each way.",
    "",
    *critic_free_section(arms, per_model),
    *ablation_control.section(out / "evals", s.controls, temperature, arms),
    "## What the numbers show",
    "",
    *[sentence(out, a, per_model) for a in arms],
    "",
    "## Budget",
    "",
    budget_table(out, arms),
    "",
    "## Plots",
    "",
    *plot_links(out, plots),
    "## Run",
    "",
    f"- command: `{s.command_line}`",
    *[f"- {k}: {v}" for k, v in machine().items()],
    "",
  ]
  report = out / "report.md"
  report.write_text("\n".join(text), encoding="utf-8")
  return report
