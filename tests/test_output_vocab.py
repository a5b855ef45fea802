"""model.output_vocab: the sampler and the scored log-probs use the same token subset, so PPO's
"old" log-probs (from either) and its new ones are softmaxes over the same rows."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stepcoder_jax import sampling
from stepcoder_jax.models import logprobs
from stepcoder_jax.models.config import ModelConfig, SamplingConfig
from stepcoder_jax.models.decoder import Decoder, left_pad_positions

V = 64
SUBSET = tuple(range(3, V, 3))  # 20 of 64 ids


def _pair():
  """The same weights without and with an output vocabulary."""
  cfg = ModelConfig.tiny("llama", vocab_size=V)
  full = Decoder(cfg, nnx.Rngs(0))
  gd, state = nnx.split(full)
  restricted = nnx.merge(gd, state)
  restricted.cfg = dataclasses.replace(cfg, output_vocab=SUBSET)
  return full, restricted


def _sample(model, temperature: float, seed: int = 0):
  prompts = [[5, 9, 12, 7], [4, 8]]
  tokens, mask = sampling.pad_prompts(prompts, pad_id=0, min_bucket=4)
  gd, state = nnx.split(model)
  run = sampling.make_sampler(gd, SamplingConfig(temperature=temperature, max_new_tokens=6))
  return tokens, mask, run(state, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(seed))


def test_sampled_tokens_are_in_the_subset_and_scored_log_probs_equal_the_sampler():
  _, model = _pair()
  tokens, mask, out = _sample(model, temperature=1.0)
  assert np.asarray(out.lengths).tolist() == [6, 6]  # no EOS ids: every row draws 6
  drawn = np.asarray(out.tokens)[:, :6]
  assert set(drawn.ravel().tolist()) <= set(SUBSET)
  # Score prompt + response with the chunked scorer: the response columns equal the sampler's.
  seq = jnp.concatenate([jnp.asarray(tokens), out.tokens], axis=1)
  m = jnp.concatenate([jnp.asarray(mask), jnp.ones_like(out.tokens, bool)], axis=1)
  logp, _ = logprobs.sequence_logprobs(model, seq, left_pad_positions(m), m, chunk=3)
  p = tokens.shape[1]
  scored = np.asarray(logp[:, p - 1:p - 1 + drawn.shape[1]])
  np.testing.assert_allclose(scored, np.asarray(out.logprobs)[:, :6], atol=2e-5)
  # A softmax over 20 rows: each drawn token is likelier than under all 64.
  full, _ = _pair()
  full_logp, _ = logprobs.sequence_logprobs(full, seq, left_pad_positions(m), m, chunk=3)
  assert np.all(scored > np.asarray(full_logp[:, p - 1:p - 1 + drawn.shape[1]]))


def test_full_subset_changes_nothing_and_outside_targets_are_impossible():
  full, _ = _pair()
  every = Decoder(full.cfg, nnx.Rngs(0))
  every.cfg = dataclasses.replace(full.cfg, output_vocab=tuple(range(V)))
  _, _, a = _sample(full, temperature=0.0)
  _, _, b = _sample(every, temperature=0.0)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-6)
  h = jax.random.normal(jax.random.key(1), (1, 2, 8))
  w = jax.random.normal(jax.random.key(2), (3, 8))
  logp, _ = logprobs.token_logprobs(h, w, jnp.array([[7, 8]]), vocab=jnp.array([2, 7, 9]))
  assert float(logp[0, 1]) == logprobs.OUTSIDE_VOCAB_LOGP and float(logp[0, 0]) < 0


def test_full_matrix_refused_and_bad_subsets_rejected():
  _, model = _pair()
  with pytest.raises(ValueError, match="output_vocab"):
    model.head_weight()
  for bad in [(5, 3), (1, 1), (0, V)]:
    with pytest.raises(ValueError, match="output_vocab"):
      ModelConfig.tiny("llama", vocab_size=V, output_vocab=bad)
