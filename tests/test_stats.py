"""The paired bootstrap (stepcoder_jax/stats.py) on cases whose answer is known by hand."""

import numpy as np
import pytest

from stepcoder_jax import stats


def test_identical_models_differ_by_exactly_zero():
  rng = np.random.default_rng(1)
  a = rng.integers(0, 2, size=50).astype(float)
  d = stats.paired_diff_ci(a, a.copy())
  assert (d.value, d.low, d.high, d.n, d.up, d.down) == (0.0, 0.0, 0.0, 50, 0, 0)
  assert not d.excludes_zero


def test_k_more_passes_of_n_is_a_difference_of_k_over_n():
  n, k = 40, 6
  base = np.zeros(n)
  base[:10] = 1.0  # both pass problems 0-9
  better = base.copy()
  better[10 : 10 + k] = 1.0  # and this one passes k more
  d = stats.paired_diff_ci(better, base)
  assert d.value == pytest.approx(k / n)
  assert (d.up, d.down) == (k, 0)  # the k problems gained, none lost
  worse = stats.paired_diff_ci(base, better)
  assert (worse.up, worse.down) == (0, k)
  # Paired: only the k differing problems vary between resamples, so every resample difference
  # is >= 0 and the interval never reaches below 0 ...
  assert d.low >= 0.0
  assert d.low <= k / n <= d.high
  # ... while the unpaired intervals of the two means overlap (the shared 10 passes dominate).
  a, b = stats.mean_ci(better), stats.mean_ci(base)
  assert a.low < b.high


def test_interval_width_shrinks_with_more_problems():
  widths = []
  for n in (20, 80, 320):
    values = np.tile([1.0, 0.0, 0.0, 0.0], n // 4)  # a 25% pass rate at every size
    e = stats.mean_ci(values)
    assert e.value == pytest.approx(0.25)
    widths.append(e.high - e.low)
  assert widths[0] > widths[1] > widths[2] > 0
  # Roughly 1 / sqrt(n): a 4x larger set halves the width (within resampling noise).
  assert widths[0] / widths[1] == pytest.approx(2.0, rel=0.2)


def test_same_seed_same_interval_other_seed_other_interval():
  rng = np.random.default_rng(3)
  a, b = rng.random(30), rng.random(30)
  assert stats.paired_diff_ci(a, b, seed=7) == stats.paired_diff_ci(a, b, seed=7)
  assert stats.paired_diff_ci(a, b, seed=7) != stats.paired_diff_ci(a, b, seed=8)


def test_interval_is_the_percentile_of_resampled_means():
  values = np.array([0.0, 1.0, 1.0, 0.5, 0.25])
  e = stats.mean_ci(values, resamples=2000, seed=5)
  means = values[stats.resample_indices(5, 2000, 5)].mean(axis=1)
  assert (e.low, e.high) == tuple(np.percentile(means, [2.5, 97.5]))
  assert e.value == pytest.approx(0.55)


def test_excludes_zero_and_text():
  assert stats.Estimate(0.1, 0.02, 0.2, 10).excludes_zero
  assert stats.Estimate(-0.1, -0.2, -0.01, 10).excludes_zero
  assert not stats.Estimate(0.03, -0.01, 0.07, 10).excludes_zero
  assert stats.Estimate(0.03, -0.01, 0.07, 10).text(signed=True) == "+0.030 [-0.010, +0.070]"
  assert stats.mean_ci([]).text() == "n/a"


def test_unpaired_inputs_are_refused():
  with pytest.raises(ValueError, match="same"):
    stats.paired_diff_ci([1.0, 0.0], [1.0])
  with pytest.raises(ValueError, match="finite"):
    stats.mean_ci([1.0, float("nan")])
