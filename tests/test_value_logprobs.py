"""Chunked log-probs against a naive full softmax; the value model's shape and from_policy copy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stepcoder_jax.models import logprobs
from stepcoder_jax.models.config import ModelConfig
from stepcoder_jax.models.decoder import Decoder, left_pad_positions
from stepcoder_jax.models.value import ValueModel


def naive(hidden, w, targets, softcap=None):
  logits = np.einsum("btd,vd->btv", np.asarray(hidden, np.float64), np.asarray(w, np.float64))
  if softcap:
    logits = np.tanh(logits / softcap) * softcap
  logits -= logits.max(-1, keepdims=True)
  logz = np.log(np.exp(logits).sum(-1))
  logp_all = logits - logz[..., None]
  logp = np.take_along_axis(logp_all, np.asarray(targets)[..., None], -1)[..., 0]
  ent = -(np.exp(logp_all) * logp_all).sum(-1)
  return logp, ent


@pytest.mark.parametrize(
  "t,chunk,softcap", [(13, 4, None), (8, 8, None), (11, 3, 5.0), (5, 64, None)]
)
def test_token_logprobs_equal_full_softmax(t, chunk, softcap):
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  hidden = jax.random.normal(k1, (3, t, 16))
  w = jax.random.normal(k2, (50, 16))
  targets = jax.random.randint(k3, (3, t), 0, 50)
  logp, ent = logprobs.token_logprobs(hidden, w, targets, chunk=chunk, softcap=softcap)
  ref_logp, ref_ent = naive(hidden, w, targets, softcap)
  assert logp.shape == ent.shape == (3, t) and logp.dtype == jnp.float32
  np.testing.assert_allclose(logp, ref_logp, atol=2e-5, rtol=1e-5)
  np.testing.assert_allclose(ent, ref_ent, atol=2e-5, rtol=1e-5)


def test_token_logprobs_gradient_equals_full_softmax_gradient():
  k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
  hidden = jax.random.normal(k1, (2, 9, 8))
  w = jax.random.normal(k2, (40, 8))
  targets = jax.random.randint(k3, (2, 9), 0, 40)

  def chunked(h, w):
    logp, ent = logprobs.token_logprobs(h, w, targets, chunk=4)
    return logp.sum() + 0.1 * ent.sum()

  def full(h, w):
    logits = jnp.einsum("btd,vd->btv", h, w)
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, targets[..., None], -1)[..., 0]
    ent = -(jnp.exp(logp_all) * logp_all).sum(-1)
    return logp.sum() + 0.1 * ent.sum()

  got = jax.grad(chunked, argnums=(0, 1))(hidden, w)
  want = jax.grad(full, argnums=(0, 1))(hidden, w)
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, atol=1e-4, rtol=1e-4)


def test_chunked_logprobs_never_build_full_logits():
  """The compiled function holds at most one chunk of [B, chunk, V] f32 logits, not [B, T, V]."""
  b, t, d, v, chunk = 2, 64, 8, 4096, 8
  hidden = jnp.zeros((b, t, d))
  w = jnp.zeros((v, d))
  targets = jnp.zeros((b, t), jnp.int32)

  def loss(h, w):
    return logprobs.token_logprobs(h, w, targets, chunk=chunk)[0].sum()

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(hidden, w).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  full = b * t * v * 4
  assert temp < full / 2, (temp, full)


def test_sequence_logprobs_scores_next_tokens():
  cfg = ModelConfig.tiny("llama", vocab_size=64)
  model = Decoder(cfg, nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(2), (2, 7), 3, 64)
  mask = jnp.array([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
  pos = left_pad_positions(mask)
  logp, _ = logprobs.sequence_logprobs(model, tokens, pos, mask, chunk=3)
  hidden, _ = model(tokens, pos, mask)
  full = jax.nn.log_softmax(model.logits(hidden))
  want = jnp.take_along_axis(full[:, :-1], tokens[:, 1:, None], -1)[..., 0]
  np.testing.assert_allclose(logp[:, :-1], want, atol=1e-5)
  assert np.all(np.asarray(logp[:, -1]) == 0)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_value_model_shape_and_from_policy(family):
  cfg = ModelConfig.tiny(family, vocab_size=64)
  policy = Decoder(cfg, nnx.Rngs(3))
  value = ValueModel.from_policy(policy, nnx.Rngs(4))
  assert not hasattr(value.backbone, "lm_head")
  src = nnx.to_flat_state(nnx.state(policy, nnx.Param))
  dst = dict(nnx.to_flat_state(nnx.state(value.backbone, nnx.Param)))
  copied = 0
  for path, var in src:
    if path[0] == "lm_head":
      continue
    np.testing.assert_array_equal(dst[path].get_value(), var.get_value())
    copied += 1
  assert copied == len(dst)

  tokens = jax.random.randint(jax.random.key(5), (2, 6), 3, 64)
  mask = jnp.array([[0, 1, 1, 1, 1, 1], [1] * 6])
  pos = left_pad_positions(mask)
  values = value(tokens, pos, mask)
  assert values.shape == (2, 6) and values.dtype == jnp.float32
  # The value is the head applied to the policy's own hidden states.
  hidden, _ = policy(tokens, pos, mask)
  want = hidden @ value.value_head[...] + value.value_bias[...]
  np.testing.assert_allclose(values, want, atol=1e-5)
  # A fresh critic (not from the policy) differs: the copy is what made them equal.
  fresh = ValueModel(cfg, nnx.Rngs(4))
  assert not np.allclose(fresh(tokens, pos, mask), values)


def test_value_model_is_trainable_separately():
  cfg = ModelConfig.tiny("qwen2", vocab_size=64)
  policy = Decoder(cfg, nnx.Rngs(0))
  value = ValueModel.from_policy(policy)
  tokens = jnp.ones((1, 4), jnp.int32)
  mask = jnp.ones((1, 4), jnp.int32)
  pos = left_pad_positions(mask)

  def loss(m):
    return jnp.mean((m(tokens, pos, mask) - 1.0) ** 2)

  grads = nnx.grad(loss)(value)
  g_embed = np.asarray(grads["backbone"]["embed"].get_value())
  assert np.abs(g_embed).sum() > 0
  before = np.asarray(policy.embed[...]).copy()
  value.backbone.embed[...] = value.backbone.embed[...] - 0.1
  np.testing.assert_array_equal(np.asarray(policy.embed[...]), before)
