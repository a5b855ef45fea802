"""The ablation's figures: held-out measures per model with 95% intervals, and the training
curves of every arm on shared axes (so arms are compared at a glance, not panel by panel)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stepcoder_jax import stats
from stepcoder_jax.metrics import _pyplot, read_jsonl

# (metrics.jsonl key, panel title). A panel whose key no arm logged is left out.
# 'cccs/mean_stage' is derived here from the per-stage histogram (cccs/stage_K counts).
CURVES = (
  ("reward_mean", "mean reward"),
  ("pass_rate", "pass rate (current stage)"),
  ("pass_rate_final", "pass rate at s* = 0"),
  ("cccs/mean_stage", "mean CCCS stage"),
  ("cccs/final", "problems at s* = 0"),
  ("ppo/ref_kl", "KL to the SFT reference"),
  ("ppo/entropy", "entropy"),
  ("fgo_mask_density", "FGO mask density"),
  ("response_tokens_mean", "response length (tokens)"),
  ("truncated_rate", "truncated rate"),
)


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
  for key, _ in CURVES:
    pts = []
    for step in sorted(by_step):
      row = by_step[step]
      v = _mean_stage(row) if key == "cccs/mean_stage" else row.get(key)
      if isinstance(v, (int, float)):
        pts.append((step, float(v)))
    if pts:
      out[key] = tuple(np.asarray(x) for x in zip(*pts))
  return out


def plot_training_curves(out: Path, arms: list[str], png: Path) -> Path | None:
  """One panel per logged key, one line per arm; None when no arm has logged anything."""
  runs = {
    a: curves_of(out / "metrics" / f"{a}.jsonl")
    for a in arms
    if (out / "metrics" / f"{a}.jsonl").is_file()
  }
  panels = [(k, t) for k, t in CURVES if any(k in c for c in runs.values())]
  if not panels:
    return None
  plt = _pyplot()
  cols = 2
  rows = (len(panels) + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(11, 2.6 * rows), squeeze=False, sharex=True)
  for ax, (key, title) in zip(axes.ravel(), panels):
    for arm, c in runs.items():
      if key in c:
        ax.plot(*c[key], label=arm, marker="." if len(c[key][0]) < 20 else None)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
  for ax in axes.ravel()[len(panels) :]:
    ax.axis("off")
  for ax in axes[-1]:
    ax.set_xlabel("iteration")
  axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  png.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(png, dpi=100)
  plt.close(fig)
  return png


def plot_heldout(
  per_model: dict[str, dict],
  png: Path,
  title: str = "measures per model: held-out problems, except the RL pool "
  "(training problems at s* = 0)",
) -> Path | None:
  """Grouped bars: measures as groups, one bar per model, 95% bootstrap intervals as error bars."""
  measures = list(dict.fromkeys(m for v in per_model.values() for m in v))
  models = [m for m, v in per_model.items() if v]
  if not measures:
    return None
  plt = _pyplot()
  x = np.arange(len(measures))
  width = 0.8 / len(models)
  fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(measures) + 2), 3.6))
  for i, model in enumerate(models):
    est = [
      stats.mean_ci([v for v, _ in per_model[model][m].values()]) if m in per_model[model] else None
      for m in measures
    ]
    ys = np.array([100 * e.value if e else np.nan for e in est])
    err = np.array(
      [[100 * (e.value - e.low), 100 * (e.high - e.value)] if e else [0, 0] for e in est]
    ).T
    ax.bar(x + (i - (len(models) - 1) / 2) * width, ys, width, yerr=err, capsize=2, label=model)
  ax.set_xticks(x, measures)
  ax.set_ylabel("% of problems (95% CI)")
  ax.set_ylim(bottom=0)  # shares are >= 0; an all-zero plot would show negative ticks
  ax.set_title(title)
  ax.legend(fontsize=7, ncol=min(4, len(models)))
  fig.tight_layout()
  png.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(png, dpi=100)
  plt.close(fig)
  return png


def write_plots(out: Path, per_model: dict[str, dict], arms: list[str]) -> list[Path]:
  """plots/heldout.png and plots/training_curves.png (those that have data)."""
  made = [
    plot_heldout(per_model, out / "plots" / "heldout.png"),
    plot_training_curves(out, arms, out / "plots" / "training_curves.png"),
  ]
  return [p for p in made if p is not None]
