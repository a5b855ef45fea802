"""The sampler's KV-cache decode loop draws, for a fixed key, the tokens a plain loop draws that
runs the full forward pass over the whole sequence at every step (fp32, greedy and sampled):
the cache's layout (keys stored slots-minor) changes memory traffic, not what is drawn."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stepcoder_jax import sampling
from stepcoder_jax.models.config import ModelConfig, SamplingConfig
from stepcoder_jax.models.decoder import Decoder, left_pad_positions

NEW = 12


def _reference(model, tokens, mask, rng, cfg: SamplingConfig):
  """Draw NEW tokens with a full forward pass per step (no cache), the sampler's draws. The
  sequence has room for every new token from the start (masked until drawn: causal attention
  never sees them), so the forward compiles once."""
  b, p = tokens.shape
  tokens = jnp.pad(tokens, ((0, 0), (0, NEW)))
  mask = jnp.pad(mask, ((0, 0), (0, NEW)))

  @jax.jit
  def next_logits(state, tokens, mask, i):
    m = nnx.merge(*state)
    hidden, _ = m(tokens, left_pad_positions(mask), mask)
    return m.logits(jax.lax.dynamic_index_in_dim(hidden, p - 1 + i, axis=1, keepdims=False))

  state = nnx.split(model)
  out_tok, out_lp = [], []
  for i in range(NEW):
    logits = next_logits(state, tokens, mask, i)
    col = sampling.draw(logits, jax.random.fold_in(rng, i), cfg)
    lp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), col[:, None], -1)[:, 0]
    out_tok.append(np.asarray(col))
    out_lp.append(np.asarray(lp))
    tokens = tokens.at[:, p + i].set(col)
    mask = mask.at[:, p + i].set(True)
  return np.stack(out_tok, 1), np.stack(out_lp, 1)


@pytest.mark.parametrize("family,kv_heads", [("gemma3", 1), ("llama", 2)])
def test_cached_decode_draws_the_full_forward_tokens(family, kv_heads):
  cfg = ModelConfig.tiny(family, vocab_size=64, num_kv_heads=kv_heads)
  model = Decoder(cfg, nnx.Rngs(3))
  prompts = [[5, 9, 13, 17, 21, 25, 29], [7, 11, 3], [40, 41, 42, 43, 44]]  # beyond the window (4)
  tokens, mask = sampling.pad_prompts(prompts, 0, min_bucket=8)
  for temperature in (0.0, 1.0):
    sc = SamplingConfig(temperature=temperature, max_new_tokens=NEW)
    rng = jax.random.key(11)
    got = sampling.generate_ids(model, prompts, sc, rng, (), 0)  # no EOS: every row decodes
    want_tok, want_lp = _reference(model, jnp.asarray(tokens), jnp.asarray(mask), rng, sc)
    np.testing.assert_array_equal(got.tokens, want_tok)
    np.testing.assert_allclose(got.logprobs, want_lp, rtol=1e-5, atol=1e-5)
    assert len({tuple(r) for r in got.tokens}) == len(prompts)  # rows really differ
