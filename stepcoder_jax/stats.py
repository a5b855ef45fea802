"""Paired bootstrap over problems: confidence intervals for held-out measures.

The ablation compares models on the same held-out problems. Problems differ far more in
difficulty than the models differ from each other, so a difference is estimated *paired*: every
bootstrap resample draws one set of problem indices and applies it to both models, and the
problem-to-problem variation cancels. One resample matrix (fixed seed) serves every measure of a
report, so two intervals computed with the same seed and problem count are drawn identically.

Light module: numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

RESAMPLES = 10_000
SEED = 0
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A mean over problems with its percentile bootstrap interval [low, high]."""

  value: float
  low: float
  high: float
  n: int
  # Paired differences only (None for a mean): the problems where the first model scored
  # higher / lower. A mean can move on one problem or on many; these say which.
  up: int | None = None
  down: int | None = None

  @property
  def excludes_zero(self) -> bool:
    """Whether the interval lies strictly on one side of 0 (a difference with evidence)."""
    return self.n > 0 and (self.low > 0.0 or self.high < 0.0)

  def text(self, scale: float = 1.0, digits: int = 3, signed: bool = False) -> str:
    """'0.250 [0.100, 0.400]' (scale 100 gives percentage points); 'n/a' without problems."""
    if self.n == 0:
      return "n/a"
    sign = "+" if signed else ""
    return (
      f"{self.value * scale:{sign}.{digits}f} "
      f"[{self.low * scale:{sign}.{digits}f}, {self.high * scale:{sign}.{digits}f}]"
    )


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
  """[resamples, n] problem indices drawn with replacement; the same for equal (n, seed)."""
  rng = np.random.default_rng(seed)
  return rng.integers(0, n, size=(resamples, n))


def _as_array(values: Sequence[float], what: str) -> np.ndarray:
  a = np.asarray(values, dtype=np.float64)
  if a.ndim != 1:
    raise ValueError(f"{what}: expected one value per problem, got shape {a.shape}")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{what}: values must be finite")
  return a


def _interval(values: np.ndarray, resamples: int, seed: int, level: float) -> Estimate:
  n = len(values)
  if n == 0:
    return Estimate(math.nan, math.nan, math.nan, 0)
  means = values[resample_indices(n, resamples, seed)].mean(axis=1)
  tail = 100.0 * (1.0 - level) / 2.0
  low, high = np.percentile(means, [tail, 100.0 - tail])
  # A constant measure has every resample mean equal to it; report that exactly, without the
  # float noise of averaging (the identical-models case must read [0, 0]).
  if np.all(values == values[0]):
    low = high = float(values[0])
  return Estimate(float(values.mean()), float(low), float(high), n)


def mean_ci(
  values: Sequence[float], *, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> Estimate:
  """Mean of a per-problem measure of one model, with its bootstrap interval."""
  return _interval(_as_array(values, "mean_ci"), resamples, seed, level)


def paired_diff_ci(
  a: Sequence[float],
  b: Sequence[float],
  *,
  resamples: int = RESAMPLES,
  seed: int = SEED,
  level: float = LEVEL,
) -> Estimate:
  """Mean of a - b over the same problems (in the same order), with the paired interval.

  Resampling the per-problem differences is the paired bootstrap: each resample takes the same
  problems for both models.
  """
  x, y = _as_array(a, "paired_diff_ci a"), _as_array(b, "paired_diff_ci b")
  if x.shape != y.shape:
    raise ValueError(f"paired_diff_ci: {len(x)} and {len(y)} problems; pairs need the same")
  d = x - y
  return dataclasses.replace(
    _interval(d, resamples, seed, level), up=int(np.sum(d > 0)), down=int(np.sum(d < 0))
  )
