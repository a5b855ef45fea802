"""Decoder behaviour not covered by the transformers parity tests: remat, dtypes, padding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stepcoder_jax.models.config import ModelConfig, ModelSpec
from stepcoder_jax.models.decoder import Decoder, left_pad_positions
from stepcoder_jax.models.logprobs import sequence_logprobs


def _batch(vocab=64):
  tokens = jax.random.randint(jax.random.key(0), (2, 7), 3, vocab)
  mask = jnp.array([[0, 0, 0, 1, 1, 1, 1], [1] * 7])
  return tokens, left_pad_positions(mask), mask


def test_left_pad_positions():
  mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(left_pad_positions(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])


def _assert_same_loss_and_gradients(model_a, model_b, tokens, pos, mask):
  """Sequence log-prob loss and its gradients agree (rtol 1e-6 and atol 1e-6)."""

  @nnx.jit
  def loss_and_grad(model):
    def loss(m):
      return -sequence_logprobs(m, tokens, pos, mask, chunk=4)[0].sum()

    return nnx.value_and_grad(loss)(model)

  l1, g1 = loss_and_grad(model_a)
  l2, g2 = loss_and_grad(model_b)
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_remat_gives_same_loss_and_gradients(family):
  cfg = ModelConfig.tiny(family, vocab_size=64)
  plain = Decoder(cfg, nnx.Rngs(1))
  remat = Decoder(cfg.replace(remat=True), nnx.Rngs(1))
  _assert_same_loss_and_gradients(plain, remat, *_batch())
  plain.set_remat(True)
  assert plain.cfg.remat


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_scan_over_layers_gives_same_loss_and_gradients(family):
  """scan_layers stacks the blocks' parameters and scans; Gemma's local and global layers
  (sliding window, own RoPE base) differ only in data. Same loss and gradients as the loop."""
  cfg = ModelConfig.tiny(family, vocab_size=64, remat=True)
  loop = Decoder(cfg, nnx.Rngs(1))
  scan = Decoder(cfg.replace(scan_layers=True), nnx.Rngs(1))
  tokens = jax.random.randint(jax.random.key(0), (2, 9), 3, 64)  # longer than the window (4)
  mask = jnp.array([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9])
  pos = left_pad_positions(mask)
  _assert_same_loss_and_gradients(loop, scan, tokens, pos, mask)
  h_loop, _ = loop(tokens, pos, mask)
  h_scan, _ = scan(tokens, pos, mask)
  np.testing.assert_allclose(h_loop, h_scan, atol=1e-5)


def test_padding_content_does_not_change_real_positions():
  cfg = ModelConfig.tiny("qwen2", vocab_size=64)
  model = Decoder(cfg, nnx.Rngs(2))
  tokens, pos, mask = _batch()
  other = jnp.where(mask.astype(bool), tokens, 17)  # different padding ids
  h1, _ = model(tokens, pos, mask)
  h2, _ = model(other, pos, mask)
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(h1)[real], np.asarray(h2)[real], atol=1e-6)
  # Same row unpadded gives the same hidden states as its left-padded version.
  n = int(mask[0].sum())
  h3, _ = model(tokens[:1, -n:], jnp.arange(n)[None], jnp.ones((1, n), jnp.int32))
  np.testing.assert_allclose(np.asarray(h3[0]), np.asarray(h1[0, -n:]), atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_bfloat16_compute_and_params(family):
  cfg = ModelConfig.tiny(family, vocab_size=64)
  f32 = Decoder(cfg, nnx.Rngs(3))
  bf16 = Decoder(cfg.replace(dtype="bfloat16", param_dtype="bfloat16"), nnx.Rngs(3))
  # Same weights, rounded (a bf16 initializer draws different numbers).
  nnx.update(bf16, jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(f32, nnx.Param)))
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
  tokens, pos, mask = _batch()
  h32, _ = f32(tokens, pos, mask)
  h16, _ = bf16(tokens, pos, mask)
  assert h16.dtype == jnp.bfloat16
  l32 = np.asarray(f32.logits(h32))
  l16 = np.asarray(bf16.logits(h16))
  real = np.asarray(mask, bool)
  assert np.abs(l32 - l16)[real].max() < 0.1 * np.abs(l32[real]).max() + 0.05
  cache = bf16.init_cache(2, 9)
  assert cache.keys[0].dtype == jnp.bfloat16


def test_model_spec_is_gin_configurable():
  import gin

  gin.clear_config()
  gin.parse_config(["model.path = 'tiny-gemma3'", "model.remat = True"])
  try:
    spec = ModelSpec()
  finally:
    gin.clear_config()
  assert spec.path == "tiny-gemma3" and spec.remat and spec.preset_family == "gemma3"
