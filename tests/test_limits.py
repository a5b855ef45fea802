"""benchmarks/limits.py: the analytic work of each bucket and the fractions of the machine's
bounds that benchmarks/rl_iteration.py prints."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import limits  # noqa: E402
import rl_iteration  # noqa: E402

from stepcoder_jax.models.config import ModelConfig  # noqa: E402

# 2 layers, d=8, 2 heads of 4, 1 kv head, F=16, a 10-row head, fp32.
S = limits.Shapes(2, 8, 16, 2, 1, 4, 10)
BODY = 2 * (2 * 8 * 2 * 4 + 2 * 8 * 1 * 4 + 3 * 8 * 16)  # q,o + k,v + gate,up,down = 1088


def test_shapes_count_the_matmul_parameters_and_the_output_vocabulary():
  assert S.body == BODY and S.head == 80
  assert S.attention(3, 5, 7) == 4 * 3 * 5 * 7 * 2 * 4 * 2
  assert S.kv_bytes(3, 7) == 2 * 2 * 3 * 7 * 1 * 4 * 4
  cfg = ModelConfig.tiny("gemma3", vocab_size=300, output_vocab=(1, 2, 5))
  s = limits.Shapes.of(cfg)
  assert s.head_rows == 3 and s.num_layers == 3 and s.param_bytes == 4
  assert limits.Shapes.of(cfg.replace(output_vocab=None, param_dtype="bfloat16")).head_rows == 300
  assert limits.Shapes.of(cfg.replace(param_dtype="bfloat16")).param_bytes == 2


def test_update_counts_a_recomputed_forward_only_under_full_remat():
  fwd = 2 * BODY * 4 * 12 + S.attention(4, 12, 12)
  none = limits.update_flops(S, 4, 8, 4, remat="none")
  assert none == 3 * fwd + 8 * 80 * 4 * 4
  assert limits.update_flops(S, 4, 8, 4, remat="dots") == none
  assert limits.update_flops(S, 4, 8, 4, remat="full") == none + fwd
  assert limits.update_flops(S, 4, 8, 4, remat="none", models=2, epochs=3) == 3 * (
    6 * fwd + 8 * 80 * 4 * 4
  )


def test_scoring_projects_only_policy_forwards():
  fwd = 2 * BODY * 4 * 12 + S.attention(4, 12, 12)
  assert limits.scoring_flops(S, 4, 8, 4, policy_forwards=1, value_forwards=0) == (
    fwd + 2 * 80 * 4 * 4
  )
  assert limits.scoring_flops(S, 4, 8, 4, policy_forwards=2, value_forwards=1) == (
    3 * fwd + 2 * 2 * 80 * 4 * 4
  )


def test_generation_bound_takes_the_tighter_limit_per_phase():
  phases = limits.generation_work(S, 4, 8, 4, steps=3)
  assert len(phases) == 4 and phases[1] == phases[3]
  pre, step = phases[0], phases[1]
  weights = (BODY + 80) * 4
  assert pre.flops == 2 * BODY * 4 * 8 + S.attention(4, 8, 12) + 2 * 80 * 4
  assert step.flops == 2 * (BODY + 80) * 4 + S.attention(4, 1, 12)
  assert pre.bytes == step.bytes == weights + S.kv_bytes(4, 12)
  # compute-bound prefill, memory-bound decode steps at these limits
  flops_s, bytes_s = 1e6, 1e5
  assert pre.flops / flops_s > pre.bytes / bytes_s and step.bytes / bytes_s > step.flops / flops_s
  bound = limits.generation_bound_s(phases, flops_s, bytes_s)
  assert bound == pytest.approx(pre.flops / flops_s + 3 * step.bytes / bytes_s)
  assert bound >= max(
    sum(p.flops for p in phases) / flops_s, sum(p.bytes for p in phases) / bytes_s
  )


def test_fraction_is_bound_over_measured_and_nan_without_a_measurement():
  assert limits.fraction(2.0, 8.0) == 0.25
  assert math.isnan(limits.fraction(2.0, 0.0)) and math.isnan(limits.fraction(2.0, float("nan")))


def test_benchmark_fractions_use_the_warm_iterations_and_the_stricter_limits():
  work = {
    "remat": "full",
    "update_flops": 100.0,
    "scoring_flops": 30.0,
    "prefill": {"flops": 20.0, "bytes": 5.0},
    "decode_step": {"flops": 1.0, "bytes": 4.0},
  }
  its = [  # the first iteration compiles: left out
    {"update_s": 99.0, "scoring_s": 99.0, "generation_s": 99.0, "decode_steps": 1},
    {"update_s": 20.0, "scoring_s": 3.0, "generation_s": 4.0, "decode_steps": 10},
    {"update_s": 30.0, "scoring_s": 3.0, "generation_s": 6.0, "decode_steps": 20},
  ]
  lim = {
    "matmul_flops_s": {"a": 5.0, "b": 10.0},
    "bandwidth_bytes_s": {"numpy": 1.0, "jnp": 2.0},
  }
  f = rl_iteration.bucket_fractions({"work": work, "iterations": its}, lim)
  assert f["update"] == {"bound_s": 10.0, "fraction": 10.0 / 25.0}
  assert f["scoring"]["fraction"] == pytest.approx(1.0)
  g = f["generation"]
  assert g["bound_s"] == pytest.approx(2.5 + 15 * 2.0) and g["decode_steps"] == 15
  assert g["fraction"] == pytest.approx(32.5 / 5.0)
  assert g["flops"] == 20 + 15 * 1 and g["bytes"] == 5 + 15 * 4


def test_measurements_return_positive_rates():
  dots = limits.measure_matmul([(64, 32, 16)], reps=1)
  assert list(dots) == ["64x32x16"] and dots["64x32x16"] > 0
  bw = limits.measure_bandwidth(1 << 20, reps=1)
  assert set(bw) == {"numpy_sum", "jnp_sum"} and min(bw.values()) > 0
