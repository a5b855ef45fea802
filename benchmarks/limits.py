"""This machine's limits and how close each bucket of an RL iteration comes to them.

Two measurements, made in the benchmark's own run (same machine, same load, same threads):
  * matmul throughput: the best of a few timed `jnp.dot`s (squares and the update's own shape);
  * memory bandwidth: bytes read per second by a large reduction (NumPy and XLA, the faster).

And the work of each bucket, counted analytically from the model's shapes (not from XLA's
cost_analysis, which counts a loop body once: the layer scan and the decode loop would be
undercounted). Only matrix products count as FLOPs, attention's included; element-wise work
(norms, softmax, RoPE) is left out, so a fraction is a slight underestimate of the work done.

  update, scoring:  fraction = FLOPs / throughput / measured seconds
  generation:       each phase (the prefill, then every decode step) is bounded by the larger of
                    FLOPs / throughput and bytes streamed / bandwidth; the bound is their sum (at
                    least max(total FLOPs / throughput, total bytes / bandwidth)), and the
                    fraction is bound / measured seconds.

A fraction of 1 means the bucket ran at the machine's limit; the rest is overhead or recompute.
The functions below are pure (the two `measure_*` ones aside).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class Shapes:
  """What the analytic counts need of a decoder (a ModelConfig has all of these fields)."""

  num_layers: int
  hidden_size: int
  intermediate_size: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  head_rows: int  # rows of the output projection: the output vocabulary's size, else vocab_size
  param_bytes: int = 4

  @classmethod
  def of(cls, cfg) -> "Shapes":
    """From a ModelConfig (its output vocabulary, when set, is the head)."""
    import jax.numpy as jnp  # knows bfloat16

    rows = len(cfg.output_vocab) if cfg.output_vocab is not None else cfg.vocab_size
    return cls(
      num_layers=cfg.num_layers,
      hidden_size=cfg.hidden_size,
      intermediate_size=cfg.intermediate_size,
      num_heads=cfg.num_heads,
      num_kv_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim,
      head_rows=rows,
      param_bytes=jnp.dtype(cfg.param_dtype).itemsize,
    )

  @property
  def body(self) -> int:
    """Matmul parameters of the blocks (q, k, v, o and the gated MLP), per token."""
    d, hd = self.hidden_size, self.head_dim
    attn = 2 * d * self.num_heads * hd + 2 * d * self.num_kv_heads * hd
    return self.num_layers * (attn + 3 * d * self.intermediate_size)

  @property
  def head(self) -> int:
    return self.head_rows * self.hidden_size

  def attention(self, rows: int, queries: int, keys: int) -> int:
    """Forward FLOPs of q.k and p.v over every layer (dense: masked slots are computed too)."""
    return 4 * rows * queries * keys * self.num_heads * self.head_dim * self.num_layers

  def kv_bytes(self, rows: int, slots: int) -> int:
    """Bytes of the whole KV cache (keys and values of every layer)."""
    return 2 * self.num_layers * rows * slots * self.num_kv_heads * self.head_dim * self.param_bytes


# Recomputed forwards of the blocks in the backward pass, per remat policy: 'full' runs each
# block's forward again; 'dots' saves the matmul outputs, so no matmul is recomputed.
REMAT_FORWARDS = {"none": 0, "dots": 0, "full": 1}


def update_flops(
  s: Shapes, rows: int, prompt: int, response: int, *, remat: str, models: int = 1, epochs: int = 1
) -> float:
  """FLOPs of one PPO update: forward + backward (2 + 4 per parameter and token) of every model
  over prompt + response columns, a recomputed block forward under remat, and the output
  projection over the response columns (its chunks are always rematerialized: 2 + 2 + 4)."""
  t = prompt + response
  fwd = 2 * s.body * rows * t + s.attention(rows, t, t)
  per_model = (3 + REMAT_FORWARDS[remat]) * fwd
  return float(epochs * (models * per_model + 8 * s.head * rows * response))


def scoring_flops(
  s: Shapes, rows: int, prompt: int, response: int, *, policy_forwards: int, value_forwards: int
) -> float:
  """FLOPs of the scoring forwards: reference (and old) policy forwards project the response
  columns onto the vocabulary; a value forward projects nothing (its scalar head is ignored)."""
  t = prompt + response
  fwd = 2 * s.body * rows * t + s.attention(rows, t, t)
  return float(
    (policy_forwards + value_forwards) * fwd + policy_forwards * 2 * s.head * rows * response
  )


@dataclasses.dataclass(frozen=True)
class Work:
  """One phase's FLOPs and the bytes it must at least stream from memory."""

  flops: float
  bytes: float

  def bound_s(self, flops_per_s: float, bytes_per_s: float) -> float:
    return max(self.flops / flops_per_s, self.bytes / bytes_per_s)


def generation_work(s: Shapes, rows: int, prompt: int, new_bucket: int, steps: int) -> list[Work]:
  """[prefill, one decode step] of the sampler; the decode step runs `steps` times.

  The prefill writes `prompt` columns into a cache of prompt + new_bucket slots and projects the
  last one; each decode step runs every row (finished ones too) through the blocks and the head,
  attending over every slot. Bytes: every weight once per phase (the embedding lookup aside) and
  the KV cache read once per decode step.
  """
  slots = prompt + new_bucket
  weights = (s.body + s.head) * s.param_bytes
  prefill = Work(
    2 * s.body * rows * prompt + s.attention(rows, prompt, slots) + 2 * s.head * rows,
    weights + s.kv_bytes(rows, slots),
  )
  step = Work(
    2 * (s.body + s.head) * rows + s.attention(rows, 1, slots),
    weights + s.kv_bytes(rows, slots),
  )
  return [prefill] + [step] * max(0, steps)


def generation_bound_s(phases: Sequence[Work], flops_per_s: float, bytes_per_s: float) -> float:
  """The least time the phases can take, each at the tighter of its two limits."""
  return sum(w.bound_s(flops_per_s, bytes_per_s) for w in phases)


def fraction(bound_s: float, measured_s: float) -> float:
  """Fraction of the bound reached (bound / measured); nan without a measurement."""
  if not measured_s or measured_s != measured_s or measured_s <= 0:
    return float("nan")
  return bound_s / measured_s


# ------------------------------------------------------------------------- measurements


def measure_matmul(shapes: Sequence[tuple[int, int, int]], reps: int = 3) -> dict[str, float]:
  """FLOP/s of a jitted fp32 `jnp.dot` per [m, k] x [k, n] shape: the best of `reps` timings."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  dot = jax.jit(jnp.dot)
  rng = np.random.default_rng(0)
  out = {}
  for m, k, n in shapes:
    x = jnp.asarray(rng.standard_normal((m, k), np.float32))
    w = jnp.asarray(rng.standard_normal((k, n), np.float32))
    jax.block_until_ready(dot(x, w))
    best = float("inf")
    for _ in range(reps):
      t = time.perf_counter()
      jax.block_until_ready(dot(x, w))
      best = min(best, time.perf_counter() - t)
    out[f"{m}x{k}x{n}"] = 2.0 * m * k * n / best
    del x, w
  return out


def measure_bandwidth(nbytes: int = 1 << 30, reps: int = 3) -> dict[str, float]:
  """Bytes/s read by a sum over an fp32 array of `nbytes` (NumPy, and a jitted jnp.sum)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  a = np.ones(nbytes // 4, np.float32)
  best = {"numpy_sum": float("inf"), "jnp_sum": float("inf")}
  a.sum()
  for _ in range(reps):
    t = time.perf_counter()
    a.sum()
    best["numpy_sum"] = min(best["numpy_sum"], time.perf_counter() - t)
  x = jnp.asarray(a)
  del a
  total = jax.jit(jnp.sum)
  jax.block_until_ready(total(x))
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(total(x))
    best["jnp_sum"] = min(best["jnp_sum"], time.perf_counter() - t)
  return {k: nbytes / v for k, v in best.items()}
