"""The decoder: Llama / Qwen2 / Gemma 3 picked by `ModelConfig.family`, with a KV cache.

Contract (docs/CONTRACTS.md): `Decoder(cfg, rngs)(tokens, positions, attention_mask, cache)`
returns (hidden [B, T, D] after the final norm, cache). Batches are left-padded: padding has mask 0
and `positions` count real tokens from 0. The output projection is applied by the caller through
`head_weight()` (chunked in logprobs.py), so full-vocabulary logits are never forced on anyone.

Family differences, all driven by the config:
  llama:  pre-norm blocks, SiLU MLP, optional Llama-3 / linear RoPE scaling.
  qwen2:  as llama plus q/k/v biases, usually tied embeddings.
  gemma3: (1 + w) RMSNorm, pre and post norms around attention and MLP, QK-norm, embeddings scaled
          by sqrt(hidden), tanh-GELU, query_pre_attn_scalar, sliding-window local layers with their
          own RoPE base next to global layers.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stepcoder_jax.models import layers
from stepcoder_jax.models.config import ModelConfig, remat_policy


# Logical axis names of a KVCache's keys and values, for sharding.py (positions/valid: batch,
# length).
KV_CACHE_KEY_AXES = ("batch", "kv_heads", "head_dim", "length")
KV_CACHE_AXES = ("batch", "length", "kv_heads", "head_dim")


@flax.struct.dataclass
class KVCache:
  """Keys/values of every layer plus the bookkeeping attention needs.

  Attributes:
    keys: per layer [B, Hkv, Dh, S] (slots minor, the layout the q.k product reads).
    values: per layer [B, S, Hkv, Dh].
    positions: [B, S] int32 RoPE position of each slot (for the sliding window).
    valid: [B, S] bool, False for empty slots and padding.
    index: [] int32, the slot where the next tokens are written.
  """

  keys: tuple[jax.Array, ...]
  values: tuple[jax.Array, ...]
  positions: jax.Array
  valid: jax.Array
  index: jax.Array

  @property
  def max_len(self) -> int:
    return self.valid.shape[1]


class Block(nnx.Module):
  """One transformer block (pre-norm; Gemma adds post-norms)."""

  def __init__(self, cfg: ModelConfig, layer_idx: int, rngs: nnx.Rngs | None):
    pdt = jnp.dtype(cfg.param_dtype)
    g = cfg.is_gemma

    def norm():
      return layers.RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, gemma=g, param_dtype=pdt, rngs=rngs)

    self.input_norm = norm()
    self.attn = layers.Attention(cfg, layer_idx, rngs)
    if g:
      self.post_attn_norm = norm()
    self.pre_mlp_norm = norm()
    self.mlp = layers.MLP(cfg, rngs)
    if g:
      self.post_mlp_norm = norm()
    self.is_local = cfg.layer_type(layer_idx) == "sliding_attention"
    self.gemma = g

  def __call__(self, x, positions, mask, kv=None, write_index=None, inv_freq=None):
    h, kv = self.attn(self.input_norm(x), positions, mask, kv, write_index, inv_freq)
    if self.gemma:
      h = self.post_attn_norm(h)
    x = x + h
    h = self.mlp(self.pre_mlp_norm(x))
    if self.gemma:
      h = self.post_mlp_norm(h)
    return x + h, kv


def _run_block(block: Block, x, positions, mask, kv, write_index):
  return block(x, positions, mask, kv, write_index)


# What each remat policy saves (models/config.py REMAT_POLICIES): 'full' saves nothing inside the
# block; 'dots' saves the outputs of matmuls without batch dimensions (the q/k/v/o projections
# and the MLP), so the backward recomputes only norms, RoPE, attention and activations.
_CHECKPOINT_POLICIES = {
  "full": None,
  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
_run_block_remat = {
  name: nnx.remat(_run_block, policy=policy) for name, policy in _CHECKPOINT_POLICIES.items()
}


class Decoder(nnx.Module):
  """Causal LM backbone + (optional, untied) output matrix."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs | None = None, *, lm_head: bool = True):
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    pdt = jnp.dtype(cfg.param_dtype)
    self.cfg = cfg
    self.embed = layers.param(
      rngs,
      nnx.initializers.normal(0.02),
      (cfg.vocab_size, cfg.hidden_size),
      pdt,
      ("vocab", "embed"),
    )
    self.layers = nnx.List([Block(cfg, i, rngs) for i in range(cfg.num_layers)])
    self.final_norm = layers.RMSNorm(
      cfg.hidden_size, cfg.rms_norm_eps, gemma=cfg.is_gemma, param_dtype=pdt, rngs=rngs
    )
    if lm_head and not cfg.tie_embeddings:
      self.lm_head = layers.param(
        rngs,
        nnx.initializers.normal(0.02),
        (cfg.vocab_size, cfg.hidden_size),
        pdt,
        ("vocab", "embed"),
      )

  @property
  def dtype(self):
    return jnp.dtype(self.cfg.dtype)

  def set_remat(self, remat: bool | str) -> None:
    """Set the block remat policy after loading (e.g. from `ModelSpec.remat`): a policy name,
    or True / False ('full' / 'none')."""
    remat_policy(remat)
    self.cfg = self.cfg.replace(remat=remat)

  def init_cache(self, batch: int, max_len: int, dtype=None) -> KVCache:
    """An empty cache for `batch` rows of up to `max_len` tokens (prompt + generated)."""
    cfg = self.cfg
    dt = jnp.dtype(dtype) if dtype is not None else self.dtype
    shape = (batch, max_len, cfg.num_kv_heads, cfg.head_dim)
    key_shape = (batch, cfg.num_kv_heads, cfg.head_dim, max_len)  # slots minor: see Attention
    return KVCache(
      keys=tuple(jnp.zeros(key_shape, dt) for _ in range(cfg.num_layers)),
      values=tuple(jnp.zeros(shape, dt) for _ in range(cfg.num_layers)),
      positions=jnp.zeros((batch, max_len), jnp.int32),
      valid=jnp.zeros((batch, max_len), bool),
      index=jnp.zeros((), jnp.int32),
    )

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    x = jnp.take(self.embed[...], tokens, axis=0).astype(self.dtype)
    if self.cfg.is_gemma:  # scale in the compute dtype, as Gemma does
      x = x * jnp.asarray(self.cfg.hidden_size**0.5, self.dtype)
    return x

  def __call__(
    self,
    tokens: jax.Array,
    positions: jax.Array,
    attention_mask: jax.Array,
    cache: KVCache | None = None,
  ) -> tuple[jax.Array, KVCache | None]:
    """Hidden states after the final norm, and the cache with the T new tokens written.

    Args:
      tokens: [B, T] int32.
      positions: [B, T] int32, RoPE positions (real tokens count from 0 in each row).
      attention_mask: [B, T] bool/int, 0 for padding.
      cache: None for a full forward pass; else the new keys go at `cache.index` and attention
        sees every valid cached slot up to (and including) each query's own slot.
    """
    cfg = self.cfg
    attention_mask = attention_mask.astype(bool)
    positions = positions.astype(jnp.int32)
    t = tokens.shape[1]
    if cache is None:
      k_pos, k_valid = positions, attention_mask
      q_slot = jnp.arange(t)
      k_slot = jnp.arange(t)
      write_index = None
    else:
      write_index = cache.index
      k_pos = jax.lax.dynamic_update_slice(cache.positions, positions, (0, write_index))
      k_valid = jax.lax.dynamic_update_slice(cache.valid, attention_mask, (0, write_index))
      q_slot = write_index + jnp.arange(t)
      k_slot = jnp.arange(cache.max_len)
    mask_global = k_valid[:, None, :] & (k_slot[None, None, :] <= q_slot[None, :, None])
    mask_local = mask_global
    if cfg.sliding_window is not None:
      dist = positions[:, :, None] - k_pos[:, None, :]
      mask_local = mask_global & (dist < cfg.sliding_window)

    x = self.embed_tokens(tokens)
    if cfg.scan_layers and cache is None:
      return self.final_norm(self._scan_blocks(x, positions, mask_local, mask_global)), None
    # Remat only helps a backward pass; the cached decode path (sampling) never differentiates.
    policy = remat_policy(cfg.remat)
    run = _run_block_remat[policy] if (policy != "none" and cache is None) else _run_block
    new_keys, new_values = [], []
    for i, block in enumerate(self.layers):
      mask = mask_local if block.is_local else mask_global
      kv = None if cache is None else (cache.keys[i], cache.values[i])
      x, kv = run(block, x, positions, mask, kv, write_index)
      if kv is not None:
        new_keys.append(kv[0])
        new_values.append(kv[1])
    x = self.final_norm(x)
    if cache is not None:
      cache = KVCache(
        keys=tuple(new_keys),
        values=tuple(new_values),
        positions=k_pos,
        valid=k_valid,
        index=write_index + t,
      )
    return x, cache

  def _scan_blocks(self, x, positions, mask_local, mask_global):
    """The blocks as one `lax.scan`: their parameters stacked on a leading layer axis, and what
    differs between layers (local or global attention, RoPE frequencies) passed as data."""
    graphdef = nnx.graphdef(self.layers[0])
    stacked = jax.tree.map(
      lambda *xs: jnp.stack(xs), *[nnx.state(b, nnx.Param) for b in self.layers]
    )
    is_local = jnp.asarray([b.is_local for b in self.layers])
    inv_freq = jnp.asarray(np.array([b.attn._inv_freq for b in self.layers], np.float32))

    def body(h, layer):
      state, local, freqs = layer
      block = nnx.merge(graphdef, state)
      mask = jnp.where(local, mask_local, mask_global)
      h, _ = block(h, positions, mask, None, None, freqs)
      return h, None

    policy = remat_policy(self.cfg.remat)
    if policy != "none":
      body = jax.checkpoint(body, policy=_CHECKPOINT_POLICIES[policy])
    x, _ = jax.lax.scan(body, x, (stacked, is_local, inv_freq))
    return x

  def head_weight(self) -> tuple[jax.Array, float | None]:
    """The [V, D] output matrix (the embedding when tied) and the final logit softcap.

    With `cfg.output_vocab` set this refuses: a caller scoring targets against the full matrix
    would disagree with the sampler; use `output_head` (and pass its ids to token_logprobs).
    """
    if self.cfg.output_vocab is not None:
      raise ValueError(
        "Decoder.head_weight: model.output_vocab is set; score through "
        "output_head() and logprobs.token_logprobs(vocab=...)"
      )
    return self._full_head()

  def _full_head(self) -> tuple[jax.Array, float | None]:
    w = self.embed[...] if self.cfg.tie_embeddings else self.lm_head[...]
    return w, self.cfg.final_logit_softcap

  def output_head(self) -> tuple[jax.Array, float | None, jax.Array | None]:
    """(matrix, softcap, ids): the rows of the output matrix the policy may emit, and their token
    ids ([V'] int32, sorted) or None for the whole vocabulary. Logit column j is token ids[j]."""
    w, softcap = self._full_head()
    if self.cfg.output_vocab is None:
      return w, softcap, None
    ids = jnp.asarray(self.cfg.output_vocab, jnp.int32)
    return jnp.take(w, ids, axis=0), softcap, ids

  def token_ids(self, columns: jax.Array) -> jax.Array:
    """Token ids of logit columns (the identity without an output vocabulary)."""
    if self.cfg.output_vocab is None:
      return columns
    return jnp.take(jnp.asarray(self.cfg.output_vocab, jnp.int32), columns)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Float32 logits for a few positions (e.g. the last one while sampling); column j is token
    `token_ids(j)` (the output vocabulary's j-th id when one is set).

    Full-sequence logits of a large vocabulary belong in logprobs.token_logprobs (chunked).
    """
    w, softcap, _ = self.output_head()
    out = jnp.einsum(
      "...d,vd->...v", hidden, w.astype(hidden.dtype), preferred_element_type=jnp.float32
    )
    if softcap:
      out = jnp.tanh(out / softcap) * softcap
    return out


def left_pad_positions(attention_mask: jax.Array) -> jax.Array:
  """Positions for a left-padded batch: real tokens count from 0, padding gets 0."""
  m = attention_mask.astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(m, axis=-1) - 1, 0) * m
