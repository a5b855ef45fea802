"""Building blocks of the decoder: RMSNorm, RoPE (incl. linear and Llama-3 scaling), GQA attention,
gated MLP.

Every parameter carries logical axis names in its `out_sharding` metadata (what
`nnx.with_partitioning` sets and `nnx.get_partition_spec` reads) from {vocab, embed, heads,
kv_heads, head_dim, mlp, norm}; sharding.py maps them to mesh axes. Parameters are created
unsharded (`eager_sharding=False`): names like 'vocab' are logical, not mesh axes, so placing
them is sharding.py's job (nnx.get_partition_spec + its rules).
Kernels are stored in "math" layout ([in, ...out]), so HF's [out, in] matrices are
transposed on import (see hf_io.py).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stepcoder_jax.models.config import ModelConfig

# Large negative instead of -inf: a query row with no visible key (e.g. a padding query) then gets
# a uniform softmax instead of NaNs that would poison gradients.
_MASK_VALUE = -1e30


def param(
  rngs: nnx.Rngs | None, init: Callable, shape: tuple[int, ...], dtype, axes: tuple[str, ...]
) -> nnx.Param:
  """A parameter initialised by `init`, annotated with logical axis names."""
  key = rngs.params() if rngs is not None else jax.random.key(0)
  return nnx.Param(init(key, shape, dtype), out_sharding=axes, eager_sharding=False)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
  """HF activation names -> jax functions."""
  if name in ("silu", "swish"):
    return jax.nn.silu
  if name in ("gelu_pytorch_tanh", "gelu_tanh", "gelu_new", "gelu_fast"):
    return lambda x: jax.nn.gelu(x, approximate=True)
  if name == "gelu":
    return lambda x: jax.nn.gelu(x, approximate=False)
  raise ValueError(f"unsupported activation {name!r}")


class RMSNorm(nnx.Module):
  """RMSNorm; Gemma's variant scales by (1 + w) with w initialised at zero."""

  def __init__(self, dim: int, eps: float, *, gemma: bool, param_dtype, rngs: nnx.Rngs | None):
    del rngs
    init = jnp.zeros if gemma else jnp.ones
    self.scale = nnx.Param(init((dim,), param_dtype), out_sharding=("norm",), eager_sharding=False)
    self.eps = eps
    self.gemma = gemma

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    if self.gemma:  # HF multiplies in float32, then casts
      return (y * (1.0 + self.scale[...].astype(jnp.float32))).astype(x.dtype)
    return self.scale[...].astype(x.dtype) * y.astype(x.dtype)  # HF Llama: cast, then multiply


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None) -> np.ndarray:
  """Inverse RoPE frequencies [head_dim // 2], float32, with HF's 'linear' or 'llama3' scaling."""
  inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
  inv = inv.astype(np.float32)
  if not scaling:
    return inv
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  if kind == "default":
    return inv
  factor = float(scaling["factor"])
  if kind == "linear":
    return (inv / factor).astype(np.float32)
  if kind == "llama3":
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_len = float(scaling["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)
  raise ValueError(f"unsupported rope_scaling type {kind!r}")


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotate x [B, T, H, Dh] by positions [B, T] (HF's rotate-half layout)."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, T, Dh/2]
  cos = jnp.cos(freqs)[:, :, None, :]
  sin = jnp.sin(freqs)[:, :, None, :]
  xf = x.astype(jnp.float32)
  x1, x2 = jnp.split(xf, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class Attention(nnx.Module):
  """Grouped-query attention with optional QK-norm (Gemma 3), biases, logit softcap and KV cache."""

  def __init__(self, cfg: ModelConfig, layer_idx: int, rngs: nnx.Rngs | None):
    pdt = jnp.dtype(cfg.param_dtype)
    d, h, kvh, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    init = nnx.initializers.normal(0.02)
    self.q_proj = param(rngs, init, (d, h, hd), pdt, ("embed", "heads", "head_dim"))
    self.k_proj = param(rngs, init, (d, kvh, hd), pdt, ("embed", "kv_heads", "head_dim"))
    self.v_proj = param(rngs, init, (d, kvh, hd), pdt, ("embed", "kv_heads", "head_dim"))
    self.o_proj = param(rngs, init, (h, hd, d), pdt, ("heads", "head_dim", "embed"))
    if cfg.attention_bias:
      zeros = nnx.initializers.zeros
      self.q_bias = param(rngs, zeros, (h, hd), pdt, ("heads", "head_dim"))
      self.k_bias = param(rngs, zeros, (kvh, hd), pdt, ("kv_heads", "head_dim"))
      self.v_bias = param(rngs, zeros, (kvh, hd), pdt, ("kv_heads", "head_dim"))
    if cfg.attention_out_bias:
      self.o_bias = param(rngs, nnx.initializers.zeros, (d,), pdt, ("embed",))
    if cfg.is_gemma:
      self.q_norm = RMSNorm(hd, cfg.rms_norm_eps, gemma=True, param_dtype=pdt, rngs=rngs)
      self.k_norm = RMSNorm(hd, cfg.rms_norm_eps, gemma=True, param_dtype=pdt, rngs=rngs)
    self.cfg = cfg
    self.dtype = jnp.dtype(cfg.dtype)
    # Gemma 3's local layers have their own RoPE base and no scaling; Qwen2's sliding layers share
    # the global RoPE.
    local_rope = cfg.is_gemma and cfg.layer_type(layer_idx) == "sliding_attention"
    theta = cfg.rope_local_theta if local_rope else cfg.rope_theta
    scaling = None if local_rope else cfg.rope_scaling_dict()
    # Static (hashable) so it lives in the graphdef, not in the trainable state.
    self._inv_freq = tuple(float(f) for f in rope_inv_freq(hd, theta, scaling))
    scalar = cfg.query_pre_attn_scalar if cfg.query_pre_attn_scalar else hd
    self.scale = float(scalar) ** -0.5

  def _project(self, x, w, b):
    y = jnp.einsum("btd,dhk->bthk", x, w[...].astype(self.dtype))
    return y if b is None else y + b[...].astype(self.dtype)

  def __call__(
    self,
    x: jax.Array,
    positions: jax.Array,
    mask: jax.Array,
    kv: tuple[jax.Array, jax.Array] | None = None,
    write_index: jax.Array | None = None,
    inv_freq: jax.Array | None = None,
  ):
    """Attend.

    Args:
      x: [B, T, D] normalised input.
      positions: [B, T] int32 RoPE positions.
      mask: [B, T, S] bool, True where query t may see key slot s (S = T without a cache).
      kv: this layer's cache (keys [B, Hkv, Dh, S], values [B, S, Hkv, Dh]), or None.
      write_index: slot where the T new keys are written when kv is given.
      inv_freq: [Dh/2] RoPE frequencies overriding this layer's own (a scan over layers passes
        each layer's as data).

    Returns:
      ([B, T, D] output, updated (keys, values) or None).
    """
    cfg = self.cfg
    q = self._project(x, self.q_proj, getattr(self, "q_bias", None))
    k = self._project(x, self.k_proj, getattr(self, "k_bias", None))
    v = self._project(x, self.v_proj, getattr(self, "v_bias", None))
    if cfg.is_gemma:
      q, k = self.q_norm(q), self.k_norm(k)
    if inv_freq is None:
      inv_freq = np.asarray(self._inv_freq, np.float32)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    k_spec = "bskd"
    if kv is not None:
      # The cache keeps keys as [B, Hkv, Dh, S], the layout XLA:CPU's q.k product reads: a decode
      # step then neither transposes nor copies them. (Keys as [B, S, Hkv, Dh] cost every decode
      # step a transpose and, with one KV head, four copies of each layer's key buffer.)
      ck, cv = kv
      kt = jnp.transpose(k, (0, 2, 3, 1)).astype(ck.dtype)
      ck = jax.lax.dynamic_update_slice(ck, kt, (0, 0, 0, write_index))
      cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, write_index, 0, 0))
      kv = (ck, cv)
      k_spec, k, v = "bkds", ck.astype(self.dtype), cv.astype(self.dtype)
    b, t, h, hd = q.shape
    kvh = v.shape[2]
    q = q.reshape(b, t, kvh, h // kvh, hd)
    scores = jnp.einsum(f"btkgd,{k_spec}->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores * self.scale
    if cfg.attn_logit_softcap:
      scores = jnp.tanh(scores / cfg.attn_logit_softcap) * cfg.attn_logit_softcap
    scores = jnp.where(mask[:, None, None, :, :], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, h, hd)
    out = jnp.einsum("bthk,hkd->btd", out, self.o_proj[...].astype(self.dtype))
    if cfg.attention_out_bias:
      out = out + self.o_bias[...].astype(self.dtype)
    return out, kv


class MLP(nnx.Module):
  """Gated MLP: down(act(gate(x)) * up(x)); SiLU for Llama/Qwen2, tanh-GELU for Gemma."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs | None):
    pdt = jnp.dtype(cfg.param_dtype)
    d, f = cfg.hidden_size, cfg.intermediate_size
    init = nnx.initializers.normal(0.02)
    self.gate_proj = param(rngs, init, (d, f), pdt, ("embed", "mlp"))
    self.up_proj = param(rngs, init, (d, f), pdt, ("embed", "mlp"))
    self.down_proj = param(rngs, init, (f, d), pdt, ("mlp", "embed"))
    if cfg.mlp_bias:
      zeros = nnx.initializers.zeros
      self.gate_bias = param(rngs, zeros, (f,), pdt, ("mlp",))
      self.up_bias = param(rngs, zeros, (f,), pdt, ("mlp",))
      self.down_bias = param(rngs, zeros, (d,), pdt, ("embed",))
    self.act_name = cfg.hidden_act
    self.has_bias = cfg.mlp_bias
    self.dtype = jnp.dtype(cfg.dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    dt = self.dtype
    gate = x @ self.gate_proj[...].astype(dt)
    up = x @ self.up_proj[...].astype(dt)
    if self.has_bias:
      gate, up = gate + self.gate_bias[...].astype(dt), up + self.up_bias[...].astype(dt)
    y = (activation(self.act_name)(gate) * up) @ self.down_proj[...].astype(dt)
    if self.has_bias:
      y = y + self.down_bias[...].astype(dt)
    return y
