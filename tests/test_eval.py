"""pass@k estimator and the by-difficulty tables."""

import itertools
import json
import math

import pytest

from stepcoder_jax import passk as ev


def _brute_force(n, c, k):
  """Fraction of k-subsets of n samples (c correct) that contain a correct one."""
  samples = [1] * c + [0] * (n - c)
  subsets = list(itertools.combinations(range(n), k))
  return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(
  "n,c,k", [(5, 0, 1), (5, 1, 1), (5, 2, 2), (6, 3, 4), (7, 1, 3), (4, 4, 2), (8, 5, 4)]
)
def test_pass_at_k_equals_enumeration(n, c, k):
  assert ev.pass_at_k(n, c, k) == pytest.approx(_brute_force(n, c, k), abs=1e-12)


def test_pass_at_k_closed_forms_and_large_n():
  assert ev.pass_at_k(10, 3, 1) == pytest.approx(0.3)
  assert ev.pass_at_k(10, 0, 5) == 0.0
  assert ev.pass_at_k(10, 6, 5) == 1.0  # only 4 failures: any 5 contain a pass
  n, c, k = 200, 13, 100
  exact = 1 - math.comb(n - c, k) / math.comb(n, k)
  assert ev.pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)
  # The biased estimator differs: the unbiased one is not 1 - (1 - c/n)^k.
  assert abs(ev.pass_at_k(10, 2, 5) - (1 - (0.8**5))) > 0.05


def test_pass_at_k_rejects_bad_input():
  with pytest.raises(ValueError):
    ev.pass_at_k(5, 6, 1)
  with pytest.raises(ValueError):
    ev.pass_at_k(5, 1, 6)


def test_aggregate_by_difficulty_and_writers(tmp_path):
  rs = [
    ev.ProblemResult("a", "introductory", n=4, c=4, greedy_passed=True),
    ev.ProblemResult("b", "introductory", n=4, c=0, greedy_passed=False),
    ev.ProblemResult("c", "interview", n=4, c=1, greedy_passed=False),
  ]
  t = ev.aggregate(rs, ks=(1, 2, 8))
  assert list(t) == ["introductory", "interview", "all"]
  assert t["introductory"]["problems"] == 2
  assert t["introductory"]["pass@1"] == pytest.approx(0.5)
  assert t["interview"]["pass@1"] == pytest.approx(0.25)
  assert t["interview"]["pass@2"] == pytest.approx(0.5)
  assert t["all"]["pass@1"] == pytest.approx((1 + 0 + 0.25) / 3)
  assert t["all"]["pass@8"] is None  # k > n is undefined, not silently 0
  assert t["all"]["greedy pass@1"] == pytest.approx(1 / 3)
  md, js = ev.write_tables(
    t, tmp_path / "eval" / "step_10", title="APPS+ test", extra={"n_samples": 4}
  )
  text = md.read_text()
  assert "| interview | 1 | 25.0 | 50.0 | - | 0.0 |" in text
  assert "| **all** |" in text
  payload = json.loads(js.read_text())
  assert payload["n_samples"] == 4
  assert ev.read_table(js)["introductory"]["pass@1"] == pytest.approx(0.5)
