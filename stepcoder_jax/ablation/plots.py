"""The ablation's figures, made to read without a caption: held-out measures per model (one
panel per measure, its own axis label, unit and problem count, 95% intervals, values printed), the
training curves of every arm on shared axes (raw per-iteration values faint, a moving average on
top), and the sharpening control (SFT across temperatures, each arm at its own).

Every figure draws a model in the same colour (`colour`), so an arm is found at a glance in all of
them; the demo's before/after figure (runs/demo.py) uses the same map.
"""

from __future__ import annotations

import textwrap
import zlib
from pathlib import Path

import numpy as np

from stepcoder_jax import stats
from stepcoder_jax.ablation import control as ablation_control
from stepcoder_jax.ablation.measures import measure_values
from stepcoder_jax.metrics import (
  CURVE_LABELS,
  TRAIN_CURVES,
  _pyplot,
  draw_smoothed,
  read_jsonl,
  save_figure,
  smoothing_handles,
)

# One colour per model, fixed by name (not by position in a figure), so that every figure draws
# an arm alike. Names are matched lower-cased: the demo labels its models 'SFT', 'StepCoder'.
MODEL_COLOURS = {
  "base": "#9a9a9a",
  "sft": "#1a1a1a",
  "ppo": "#1f77b4",
  "cccs": "#ff7f0e",
  "fgo": "#2ca02c",
  "stepcoder": "#d62728",
  "grpo": "#9467bd",
  "grpo_stepcoder": "#8c564b",
  "grpo_cccs": "#e377c2",
  "grpo_fgo": "#bcbd22",
}
# Names outside the map (a signal arm, a tune point) get one of these, chosen from the name.
_SPARE_COLOURS = ("#17becf", "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5")


def colour(model: str) -> str:
  """The colour `model` has in every figure."""
  key = model.lower()
  if key in MODEL_COLOURS:
    return MODEL_COLOURS[key]
  return _SPARE_COLOURS[zlib.crc32(key.encode()) % len(_SPARE_COLOURS)]


# The training curves: train's own, with the mean CCCS stage after the pass rates (derived here
# from the per-stage histogram, the cccs/stage_K counts); a panel no arm logged is left out.
CURVES = (*TRAIN_CURVES[:3], "cccs/mean_stage", *TRAIN_CURVES[3:])
# (panel title, y-axis label with the unit) per key: train's own labels, and the derived key.
CURVE_AXES = {
  **CURVE_LABELS,
  "cccs/mean_stage": ("mean CCCS stage over the RL pool", "stage (0 = first subtask)"),
}
SMOOTH = 5  # iterations in the moving average drawn over each arm's raw curve

# The held-out figure: measure -> (panel title, y-axis label). {n}: the problems measured;
# {sampled}: the sampled evaluation's temperature and samples per problem.
MEASURE_AXES = {
  "greedy pass@1": ("greedy pass@1 (held out)", "greedy pass@1, % of {n} problems"),
  "pass@1 (n samples)": (
    "sampled pass@1 (held out)",
    "sampled pass@1{sampled}, % (mean of {n} problems)",
  ),
  "tests share": (
    "unit tests passed, greedy (held out)",
    "tests passed, % of a problem's tests (mean of {n} problems)",
  ),
  "subtask pass rate": (
    "subtask from the last CCCS start point, greedy (held out)",
    "subtask pass rate, % of {n} problems with a CCCS start point",
  ),
  "RL-pool pass@1": (
    "RL pool: the training problems, not held out (greedy, s* = 0)",
    "greedy pass@1, % of {n} RL-pool problems",
  ),
}


def _mean_stage(row: dict) -> float | None:
  counts = {
    int(k.rsplit("_", 1)[1]): v
    for k, v in row.items()
    if k.startswith("cccs/stage_") and k.rsplit("_", 1)[1].isdigit()
  }
  total = sum(counts.values())
  return sum(k * v for k, v in counts.items()) / total if total else None


def curves_of(jsonl: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """key -> (steps, values); a step logged twice (a resumed run) keeps its last row."""
  by_step = {int(r["step"]): r for r in read_jsonl(jsonl) if "step" in r}
  out = {}
  for key in CURVES:
    pts = []
    for step in sorted(by_step):
      row = by_step[step]
      v = _mean_stage(row) if key == "cccs/mean_stage" else row.get(key)
      if isinstance(v, (int, float)):
        pts.append((step, float(v)))
    if pts:
      out[key] = tuple(np.asarray(x) for x in zip(*pts))
  return out


def training_figure(out: Path, arms: list[str]):
  """One panel per logged key, one colour per arm; None when no arm has logged anything."""
  runs = {
    a: curves_of(out / "metrics" / f"{a}.jsonl")
    for a in arms
    if (out / "metrics" / f"{a}.jsonl").is_file()
  }
  panels = [k for k in CURVES if any(k in c for c in runs.values())]
  if not panels:
    return None
  plt = _pyplot()
  cols = 2
  rows = (len(panels) + cols - 1) // cols
  fig, axes = plt.subplots(
    rows,
    cols,
    figsize=(11, 2.5 * rows + 1.2),
    squeeze=False,
    sharex=True,
    layout="constrained",
  )
  for ax, key in zip(axes.ravel(), panels):
    for arm, c in runs.items():
      if key in c:
        draw_smoothed(ax, *c[key], SMOOTH, colour(arm))
    title, unit = CURVE_AXES.get(key, (key, ""))
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(unit, fontsize=8)
    ax.grid(alpha=0.3)
  for ax in axes.ravel()[len(panels) :]:
    ax.axis("off")
  for ax in axes.ravel()[max(0, len(panels) - cols) : len(panels)]:
    ax.set_xlabel("iteration")
    ax.xaxis.set_tick_params(labelbottom=True)
  from matplotlib.lines import Line2D

  handles = [Line2D([], [], color=colour(a), linewidth=1.6, label=a) for a in runs]
  handles += smoothing_handles(SMOOTH, "iteration", "black")
  fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=9)
  fig.suptitle("Training curves of the ablation's arms (one point per iteration)")
  return fig


def plot_training_curves(out: Path, arms: list[str], png: Path) -> Path | None:
  """plots/training_curves.png; None when no arm has logged anything."""
  fig = training_figure(out, arms)
  return None if fig is None else save_figure(fig, png)


def _count(per_problem: list[dict]) -> str:
  """How many problems the per-problem values cover: '132', or '120-132' if they differ."""
  ns = sorted({len(v) for v in per_problem})
  return str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


def measure_axes(measure: str, n: str, sampled: tuple[float, int] | None = None) -> tuple[str, str]:
  """(panel title, y-axis label) of `measure` over `n` problems."""
  title, label = MEASURE_AXES.get(measure, (measure, measure + ", % of {n} problems"))
  at = f" at T = {sampled[0]:g}, {sampled[1]} samples each" if sampled else ""
  return title, label.format(n=n, sampled=at)


def heldout_figure(
  per_model: dict[str, dict],
  title: str,
  sampled: tuple[float, int] | None = None,
):
  """One panel per measure, one bar per model (mean with its 95% bootstrap interval, the value
  printed above); a model at 0 is drawn as a line at 0, one not evaluated is marked 'n/a'."""
  measures = list(dict.fromkeys(m for v in per_model.values() for m in v))
  models = [m for m, v in per_model.items() if v]
  if not measures:
    return None
  plt = _pyplot()
  cols = min(3, len(measures))
  rows = (len(measures) + cols - 1) // cols
  fig, axes = plt.subplots(
    rows,
    cols,
    figsize=(4.4 * cols, 3.3 * rows + 1.0),
    squeeze=False,
    layout="constrained",
  )
  x = np.arange(len(models))
  for ax, measure in zip(axes.ravel(), measures):
    ests = [
      stats.mean_ci([v for v, _ in per_model[m][measure].values()])
      if per_model[m].get(measure)
      else None
      for m in models
    ]
    top = max([100 * e.high for e in ests if e] + [1.0])
    for xi, model, e in zip(x, models, ests):
      c = colour(model)
      if e is None:
        ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=7, color="grey")
        continue
      v = 100 * e.value
      ax.bar(xi, v, 0.8, color=c)
      if v == 0:  # a bar of height 0 would not show: a thick line at 0 in the model's colour
        ax.hlines(0, xi - 0.4, xi + 0.4, color=c, linewidth=4, zorder=3)
      ax.errorbar(
        xi,
        v,
        yerr=[[v - 100 * e.low], [100 * e.high - v]],
        color="black",
        capsize=2,
        linewidth=1,
      )
      ax.text(xi, 100 * e.high + 0.01 * top, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    panel, label = measure_axes(
      measure, _count([v[measure] for v in per_model.values() if measure in v]), sampled
    )
    ax.set_title("\n".join(textwrap.wrap(panel, 42)), fontsize=9)
    ax.set_ylabel("\n".join(textwrap.wrap(label, 38)), fontsize=8)
    ax.set_xticks(x, models, rotation=35, ha="right", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.6)
    # Room above for the printed values; a little below 0 so a line at 0 clears the frame.
    ax.set_ylim(-0.02 * top, 1.12 * top)
    ax.grid(axis="y", alpha=0.3)
  for ax in axes.ravel()[len(measures) :]:
    ax.axis("off")
  fig.suptitle(
    f"{title}\nbar: mean over problems (value printed); whisker: 95% bootstrap interval; "
    "a line at 0: none passed; n/a: not evaluated",
    fontsize=10,
  )
  return fig


def plot_heldout(
  per_model: dict[str, dict],
  png: Path,
  title: str = "Measures per model on held-out problems (and on the RL pool, for comparison)",
  sampled: tuple[float, int] | None = None,
) -> Path | None:
  """The held-out figure (heldout_figure) saved to `png`; None without any measure."""
  fig = heldout_figure(per_model, title, sampled)
  return None if fig is None else save_figure(fig, png)


def sharpening_figure(
  evals_dir: Path, temperatures: tuple[float, ...], eval_temperature: float, arms: list[str]
):
  """SFT's pass@1 against temperature (95% intervals), each arm's sampled pass@1 at its
  temperature beside it; None without the control or with fewer than two points."""
  points = ablation_control.curve(evals_dir, temperatures, eval_temperature) if temperatures else {}
  if len(points) < 2:
    return None
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
  ests = [stats.mean_ci([v for v, _ in p.values()]) for p in points.values()]
  ax.errorbar(
    np.array(list(points)),
    [100 * e.value for e in ests],
    yerr=np.array([[100 * (e.value - e.low), 100 * (e.high - e.value)] for e in ests]).T,
    capsize=3,
    marker="o",
    color=colour("sft"),
    label="SFT, sampled at T (T = 0: greedy)",
  )
  shown = [a for a in arms if measure_values(evals_dir, a).get(ablation_control.SAMPLED)]
  for i, arm in enumerate(shown):
    v = measure_values(evals_dir, arm)[ablation_control.SAMPLED]
    e = stats.mean_ci([x for x, _ in v.values()])
    ax.errorbar(  # right of T = eval_temperature, offset so that SFT's point there stays visible
      eval_temperature + 0.04 * (i + 1),
      100 * e.value,
      yerr=[[100 * (e.value - e.low)], [100 * (e.high - e.value)]],
      capsize=3,
      marker="s",
      linestyle="none",
      color=colour(arm),
      label=f"{arm}, at T = {eval_temperature:g}",
    )
  n = _count(list(points.values()))
  ax.set_xlabel("sampling temperature T (0 = greedy)")
  ax.set_ylabel(f"held-out pass@1, % (mean of {n} problems, 95% CI)")
  ax.set_title(
    "Sharpening control: SFT at lower temperatures\nvs each arm at its own "
    f"(T = {eval_temperature:g})",
    fontsize=10,
  )
  ax.set_ylim(bottom=0)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
  return fig


def plot_sharpening(
  evals_dir: Path,
  temperatures: tuple[float, ...],
  eval_temperature: float,
  arms: list[str],
  png: Path,
) -> Path | None:
  """plots/sharpening.png (sharpening_figure); None without the control's points."""
  fig = sharpening_figure(evals_dir, temperatures, eval_temperature, arms)
  return None if fig is None else save_figure(fig, png)


def write_plots(
  out: Path,
  per_model: dict[str, dict],
  arms: list[str],
  sampled: tuple[float, int] | None = None,
  controls: tuple[float, ...] = (),
) -> list[Path]:
  """plots/heldout.png, plots/training_curves.png and plots/sharpening.png (those that have
  data); `sampled`: the sampled evaluation's (temperature, samples per problem)."""
  made = [
    plot_heldout(per_model, out / "plots" / "heldout.png", sampled=sampled),
    plot_training_curves(out, arms, out / "plots" / "training_curves.png"),
  ]
  if sampled:
    made.append(
      plot_sharpening(out / "evals", controls, sampled[0], arms, out / "plots" / "sharpening.png")
    )
  return [p for p in made if p is not None]
