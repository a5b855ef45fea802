"""Training metrics: a JSONL log, TensorBoard event files, a progress bar and plots.

Only process 0 writes (every process computes the same global metrics, so one copy suffices).
The JSONL log is the source of truth (one object per step, flushed at once so a killed run keeps
every finished step); TensorBoard is for watching a run live; the plots are for the README.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

JSONL_NAME = "metrics.jsonl"
TB_DIR = "tensorboard"


def _is_process_zero() -> bool:
  import jax  # only here: plotting and reading logs must not need a backend

  return jax.process_index() == 0


def _scalar(v: Any) -> float | int | None:
  """A Python number for scalars (numpy / jax 0-d arrays too); None for anything else."""
  if isinstance(v, (bool, np.bool_)):
    return int(v)
  if isinstance(v, np.generic):
    return v.item()
  if isinstance(v, numbers.Number):
    return v  # type: ignore[return-value]
  if hasattr(v, "shape") and getattr(v, "size", 0) == 1 and np.ndim(v) == 0:
    return np.asarray(v).item()
  return None


def _jsonable(v: Any) -> Any:
  s = _scalar(v)
  if s is not None:
    return None if isinstance(s, float) and not math.isfinite(s) else s
  if hasattr(v, "shape"):
    return np.asarray(v).tolist()
  if isinstance(v, Mapping):
    return {str(k): _jsonable(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_jsonable(x) for x in v]
  return v


class MetricsWriter:
  """Appends one JSON object per step to `<workdir>/metrics.jsonl` and mirrors the scalars to
  TensorBoard (`<workdir>/tensorboard`). Arrays and lists (e.g. the curriculum stage histogram)
  go to TensorBoard as histograms and to the JSONL as lists.

  Args:
    workdir: run directory.
    enabled: default: only process 0 writes.
    tensorboard / jsonl: which outputs.
    resumed_at: the step a resumed run restarts after: rows logged after it by the killed run are
      dropped from the JSONL, and TensorBoard is told to discard its events from step
      `resumed_at + 1` on (the resumed run writes those steps again).
  """

  def __init__(
    self,
    workdir: str | Path,
    *,
    enabled: bool | None = None,
    tensorboard: bool = True,
    jsonl: bool = True,
    resumed_at: int | None = None,
  ):
    self.workdir = Path(workdir)
    self.enabled = _is_process_zero() if enabled is None else enabled
    self._jsonl = None
    self._tb = None
    if not self.enabled:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    if jsonl:
      if resumed_at is not None:
        keep_rows_until(self.workdir / JSONL_NAME, resumed_at)
      self._jsonl = open(self.workdir / JSONL_NAME, "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter

      purge = None if resumed_at is None else resumed_at + 1
      self._tb = SummaryWriter(logdir=str(self.workdir / TB_DIR), flush_secs=10, purge_step=purge)

  @property
  def jsonl_path(self) -> Path:
    return self.workdir / JSONL_NAME

  def write(self, step: int, metrics: Mapping[str, Any], prefix: str = "") -> None:
    """Record `metrics` at `step` (keys become `prefix + key`)."""
    if not self.enabled:
      return
    row = {"step": int(step), "time": round(time.time(), 3)}
    for k, v in metrics.items():
      row[prefix + k] = _jsonable(v)
    if self._jsonl is not None:
      self._jsonl.write(json.dumps(row, sort_keys=False) + "\n")
      self._jsonl.flush()
    if self._tb is not None:
      for k, v in metrics.items():
        name = prefix + k
        s = _scalar(v)
        if s is not None:
          self._tb.add_scalar(name, s, step)
        elif hasattr(v, "shape") or isinstance(v, (list, tuple)):
          arr = np.asarray(v, dtype=np.float64).ravel()
          if arr.size:
            self._tb.add_histogram(name, arr, step)

  def write_text(self, step: int, tag: str, text: str) -> None:
    """Free text (e.g. a sampled completion, the gin config) into TensorBoard."""
    if self.enabled and self._tb is not None:
      self._tb.add_text(tag, text, step)

  def flush(self) -> None:
    if self._jsonl is not None:
      self._jsonl.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> "MetricsWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def keep_rows_until(path: Path, step: int) -> None:
  """Drop the rows of a metrics JSONL logged after `step` (atomically; no file: nothing)."""
  if not path.is_file():
    return
  kept = [
    line
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
    if line.strip() and json.loads(line).get("step", 0) <= step
  ]
  tmp = path.with_suffix(".tmp")
  tmp.write_text("".join(kept), encoding="utf-8")
  tmp.replace(path)


def read_jsonl(path: str | Path) -> list[dict]:
  """The rows of a metrics log; a torn last line (killed run) is skipped."""
  rows = []
  for line in Path(path).read_text(encoding="utf-8").splitlines():
    line = line.strip()
    if not line:
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      continue
  return rows


class ProgressBar:
  """A tqdm bar over training iterations showing reward, pass rate and tqdm's own ETA."""

  def __init__(
    self,
    total: int,
    initial: int = 0,
    *,
    enabled: bool | None = None,
    desc: str = "train",
    keys: Sequence[str] = ("reward", "pass_rate"),
    file: Any = None,
  ):
    self.enabled = _is_process_zero() if enabled is None else enabled
    self.keys = tuple(keys)
    self._bar = None
    self.shown: dict[str, str] = {}  # what the bar shows after the counter
    if self.enabled:
      from tqdm import tqdm

      self._bar = tqdm(
        total=total,
        initial=initial,
        desc=desc,
        dynamic_ncols=True,
        smoothing=0.1,
        unit="it",
        file=file,
      )

  def update(self, metrics: Mapping[str, Any] | None = None, n: int = 1) -> None:
    if self._bar is None:
      return
    if metrics:
      shown = {}
      for k in self.keys:
        s = _scalar(metrics.get(k)) if k in metrics else None
        if s is not None:
          shown[k] = f"{s:.3f}"
      self.shown = shown
      self._bar.set_postfix(shown, refresh=False)
    self._bar.update(n)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def __enter__(self) -> "ProgressBar":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")  # files only; never a display
  import matplotlib.pyplot as plt

  return plt


# The curves of `train`'s training_curves.png, what a reader of a run needs on one page: reward
# and pass rate (all rows, and the rows at s* = 0), how far the curriculum got (problems at
# s* = 0), the KL to the reference policy, entropy, FGO mask density, response length and the
# share of responses cut by max_new_tokens. ppo/ref_kl (to the SFT reference), not
# ppo/approx_kl: with one epoch of one minibatch the new/old ratio is 1 at the only update, so
# approx_kl is zero by construction.
TRAIN_CURVES = (
  "reward_mean",
  "pass_rate",
  "pass_rate_final",
  "cccs/final",
  "ppo/ref_kl",
  "ppo/entropy",
  "fgo_mask_density",
  "response_tokens_mean",
  "truncated_rate",
)

# What a curve of `train` shows: (panel title, y-axis label with the unit). A key not listed
# is shown as it is.
CURVE_LABELS = {
  "reward_mean": ("mean reward of the rollouts", "reward"),
  "pass_rate": ("rollouts passing every test (at their CCCS stage)", "share of rollouts"),
  "pass_rate_final": ("rollouts passing, whole problems (s* = 0) only", "share of rollouts"),
  "cccs/final": ("problems whose CCCS curriculum reached s* = 0", "problems"),
  "ppo/ref_kl": ("KL to the reference (SFT) policy", "nats per response"),
  "ppo/entropy": ("policy entropy", "nats per token"),
  "fgo_mask_density": ("response tokens kept by FGO's mask", "share of tokens"),
  "response_tokens_mean": ("response length", "tokens"),
  "truncated_rate": ("responses cut at max_new_tokens", "share of rollouts"),
  "ppo/kl_coef": ("KL penalty coefficient", "coefficient"),
  "ppo/approx_kl": ("KL between the policy before and after the update", "nats per token"),
  "ppo/clip_frac": ("tokens whose policy ratio was clipped", "share of tokens"),
  "ppo/policy_loss": ("policy loss", "loss"),
  "ppo/value_loss": ("value loss", "squared error"),
  "ppo/explained_variance": ("returns explained by the value model", "explained variance"),
  "ppo/policy_lr": ("policy learning rate", "learning rate"),
  "time/iteration_s": ("wall time of an iteration", "seconds"),
}


def draw_smoothed(ax, steps: np.ndarray, vals: np.ndarray, window: int, color: str) -> None:
  """One curve on `ax`: with at least `window` (> 1) points, the raw values faint and their moving
  average over `window` points on top (from the window-th point on); else the raw values, with
  markers when there are few."""
  if window > 1 and len(vals) >= window:
    ax.plot(steps, vals, color=color, alpha=0.3, linewidth=0.8)
    vals = np.convolve(vals, np.ones(window) / window, mode="valid")
    steps = steps[window - 1 :]
  ax.plot(steps, vals, color=color, linewidth=1.6, marker="." if len(vals) < 30 else None)


def smoothing_handles(window: int, x_label: str, color: str) -> list:
  """Legend entries that say what draw_smoothed drew: the faint raw line and the moving average."""
  from matplotlib.lines import Line2D

  return [
    Line2D([], [], color=color, alpha=0.3, linewidth=0.8, label=f"raw, per {x_label}"),
    Line2D([], [], color=color, linewidth=1.6, label=f"moving average over {window} {x_label}s"),
  ]


def save_figure(fig, png: str | Path) -> Path:
  """Writes `fig` to `png` (its folder made) and closes it."""
  out = Path(png)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=100)
  _pyplot().close(fig)
  return out


def curves_figure(
  jsonl_path: str | Path,
  keys: Iterable[str],
  *,
  smooth: int = 1,
  title: str | None = None,
  x_label: str = "step",
):
  """One panel per key of `metrics.jsonl` against step, titled and labelled from CURVE_LABELS;
  with `smooth` > 1, a moving average over that many points over the raw values drawn faint (the
  figure's legend says so)."""
  rows = read_jsonl(jsonl_path)
  keys = list(keys)
  if not keys:
    raise ValueError("plot_curves: no keys")
  fig, axes = _pyplot().subplots(
    len(keys),
    1,
    figsize=(6, 2.4 * len(keys) + 0.8),
    squeeze=False,
    sharex=True,
    layout="constrained",
  )
  smoothed = False
  for ax, key in zip(axes[:, 0], keys):
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    if pts:
      steps, vals = map(np.asarray, zip(*pts))
      draw_smoothed(ax, steps, vals, smooth, "C0")
      smoothed |= 1 < smooth <= len(vals)
    else:
      ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    what, unit = CURVE_LABELS.get(key, (key, ""))
    ax.set_title(f"{what} ({key})" if what != key else key, fontsize=9, loc="left")
    ax.set_ylabel(unit or key, fontsize=8)
    ax.grid(alpha=0.3)
  axes[-1, 0].set_xlabel(x_label)
  if smoothed:
    handles = smoothing_handles(smooth, x_label, "C0")
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8)
  if title:
    fig.suptitle(title)
  return fig


def plot_curves(jsonl_path: str | Path, out_png: str | Path, keys: Iterable[str], **kw) -> Path:
  """curves_figure (its keyword arguments: smooth, title, x_label) written to `out_png`."""
  return save_figure(curves_figure(jsonl_path, keys, **kw), out_png)
