"""Our decoder against transformers (PyTorch) on tiny random models of each family.

Each model is made with transformers, saved with save_pretrained, and loaded by hf_io.load (the
torch-free safetensors path). We check: logits on a left-padded batch (real positions only),
greedy decoding through our KV cache against transformers' greedy generate, and that RoPE
frequencies with linear / Llama-3 scaling equal transformers'.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stepcoder_jax.models import hf_io
from stepcoder_jax.models.decoder import left_pad_positions

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

FAMILIES = ("llama", "qwen2", "gemma3")
VOCAB = 300
NEW_TOKENS = 16
# Left-padded batch: three rows of different lengths.
LENGTHS = (10, 6, 8)


def hf_config(family: str):
  """A tiny transformers config exercising the family's specific features."""
  common = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rms_norm_eps=1e-6,
    max_position_embeddings=256,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
  )
  if family == "llama":
    return transformers.LlamaConfig(
      **common,
      tie_word_embeddings=False,
      rope_parameters={
        "rope_type": "llama3",
        "rope_theta": 10000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
      },
    )
  if family == "qwen2":
    return transformers.Qwen2Config(
      **common,
      tie_word_embeddings=True,
      rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
    )
  if family == "gemma3":
    return transformers.Gemma3TextConfig(
      **common,
      tie_word_embeddings=True,
      sliding_window=4,
      query_pre_attn_scalar=24,
      layer_types=["sliding_attention", "sliding_attention", "full_attention"],
      rope_parameters={
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
      },
    )
  raise ValueError(family)


def make_hf_model(family: str, path, seed: int = 0):
  """A random fp32 transformers model of `family`, saved to `path`; returns the torch model.

  Weights are drawn larger than transformers' init (std 0.02) so that logits differ clearly
  between tokens and a wrong layout cannot hide under the tolerance.
  """
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(
    hf_config(family), dtype=torch.float32, attn_implementation="eager"
  )
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        base = 0.0 if family == "gemma3" else 1.0
        p.copy_(base + 0.1 * torch.randn_like(p))
      elif name.endswith("bias"):
        p.copy_(0.1 * torch.randn_like(p))
      else:
        p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
  model.eval()
  model.save_pretrained(str(path))
  return model


def padded_batch(seed: int = 0):
  rng = np.random.default_rng(seed)
  t = max(LENGTHS)
  tokens = np.zeros((len(LENGTHS), t), np.int32)
  mask = np.zeros((len(LENGTHS), t), np.int32)
  for i, n in enumerate(LENGTHS):
    tokens[i, t - n :] = rng.integers(3, VOCAB, n)
    mask[i, t - n :] = 1
  return tokens, mask


def hf_logits(model, tokens, mask):
  positions = np.asarray(left_pad_positions(jnp.asarray(mask)))
  with torch.no_grad():
    out = model(
      input_ids=torch.tensor(tokens, dtype=torch.long),
      attention_mask=torch.tensor(mask, dtype=torch.long),
      position_ids=torch.tensor(positions, dtype=torch.long),
    )
  return out.logits.float().numpy()


def our_logits(decoder, tokens, mask):
  @nnx.jit
  def fwd(model, tokens, mask):
    hidden, _ = model(tokens, left_pad_positions(mask), mask)
    return model.logits(hidden)

  return np.asarray(fwd(decoder, jnp.asarray(tokens), jnp.asarray(mask)))


def greedy(decoder, tokens, mask, new_tokens: int) -> np.ndarray:
  """Greedy decoding through the KV cache: one prefill, then one token per call."""
  tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
  b, t = tokens.shape

  @nnx.jit
  def prefill(model, tokens, mask, cache):
    positions = left_pad_positions(mask)
    hidden, cache = model(tokens, positions, mask, cache)
    return jnp.argmax(model.logits(hidden[:, -1]), -1), positions[:, -1] + 1, cache

  @nnx.jit
  def step(model, token, position, cache):
    ones = jnp.ones_like(token)[:, None]
    hidden, cache = model(token[:, None], position[:, None], ones, cache)
    return jnp.argmax(model.logits(hidden[:, -1]), -1), position + 1, cache

  cache = decoder.init_cache(b, t + new_tokens)
  token, position, cache = prefill(decoder, tokens, mask, cache)
  out = [token]
  for _ in range(new_tokens - 1):
    token, position, cache = step(decoder, token, position, cache)
    out.append(token)
  return np.stack([np.asarray(x) for x in out], axis=1)


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request, tmp_path_factory):
  """(family, transformers model, our config, our decoder, saved directory)."""
  path = tmp_path_factory.mktemp(f"hf_{request.param}")
  model = make_hf_model(request.param, path)
  cfg, decoder = hf_io.load(path)
  return request.param, model, cfg, decoder, path


def test_config_matches_family(pair):
  family, model, cfg, _, _ = pair
  assert cfg.family == family
  assert cfg.num_layers == model.config.num_hidden_layers
  assert cfg.tie_embeddings == (family != "llama")
  if family == "gemma3":
    assert cfg.sliding_window == 4 and cfg.query_pre_attn_scalar == 24
    assert cfg.rope_theta == 1e6 and cfg.rope_local_theta == 1e4
  if family == "llama":
    assert cfg.rope_scaling_dict()["rope_type"] == "llama3"


def test_logits_match_transformers_on_left_padded_batch(pair):
  _, model, _, decoder, _ = pair
  tokens, mask = padded_batch()
  ref = hf_logits(model, tokens, mask)
  ours = our_logits(decoder, tokens, mask)
  real = mask.astype(bool)
  assert np.abs(ref[real]).max() > 1.0  # logits are not all tiny: the comparison has teeth
  np.testing.assert_allclose(ours[real], ref[real], atol=1e-4, rtol=0)


def test_kv_cache_greedy_matches_transformers_generate(pair):
  family, model, _, decoder, _ = pair
  tokens, mask = padded_batch(seed=1)
  model.generation_config.eos_token_id = None  # always NEW_TOKENS tokens
  with torch.no_grad():
    ref = model.generate(
      input_ids=torch.tensor(tokens, dtype=torch.long),
      attention_mask=torch.tensor(mask, dtype=torch.long),
      do_sample=False,
      max_new_tokens=NEW_TOKENS,
      pad_token_id=0,
    )
  ref = ref[:, tokens.shape[1] :].numpy()
  ours = greedy(decoder, tokens, mask, NEW_TOKENS)
  assert ref.shape == ours.shape == (len(LENGTHS), NEW_TOKENS)
  # Sanity: the text is not one token repeated (else a broken cache could still match).
  assert len(np.unique(ref)) > 3, family
  np.testing.assert_array_equal(ours, ref)


def test_cache_prefill_in_pieces_equals_full_forward(pair):
  """Writing the prompt into the cache in two calls gives the full forward's hidden states."""
  _, _, _, decoder, _ = pair
  tokens, mask = padded_batch(seed=2)
  tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
  positions = left_pad_positions(mask)
  full, _ = decoder(tokens, positions, mask)
  cache = decoder.init_cache(tokens.shape[0], tokens.shape[1] + 3)
  a, cache = decoder(tokens[:, :5], positions[:, :5], mask[:, :5], cache)
  b, cache = decoder(tokens[:, 5:], positions[:, 5:], mask[:, 5:], cache)
  assert int(cache.index) == tokens.shape[1]
  pieces = jnp.concatenate([a, b], axis=1)
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(pieces)[real], np.asarray(full)[real], atol=1e-5)


@pytest.mark.parametrize(
  "rope",
  [
    {"rope_type": "linear", "factor": 4.0, "rope_theta": 500000.0},
    {
      "rope_type": "llama3",
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192,
      "rope_theta": 500000.0,
    },
  ],
)
def test_rope_scaling_frequencies_match_transformers(rope):
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
  from stepcoder_jax.models.layers import rope_inv_freq

  cfg = transformers.LlamaConfig(
    hidden_size=2048, num_attention_heads=16, head_dim=128, rope_parameters=dict(rope)
  )
  ref, _ = ROPE_INIT_FUNCTIONS[rope["rope_type"]](cfg, "cpu")
  ours = rope_inv_freq(128, rope["rope_theta"], rope)
  np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-6)
  assert not np.allclose(ours, rope_inv_freq(128, rope["rope_theta"], None))


def test_params_carry_logical_axis_names(pair):
  _, _, _, decoder, _ = pair
  allowed = {"vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "norm"}
  specs = jax.tree.leaves(
    nnx.get_partition_spec(nnx.state(decoder, nnx.Param)),
    is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec),
  )
  params = jax.tree.leaves(nnx.state(decoder, nnx.Param))
  assert len(specs) == len(params) > 0
  for spec, p in zip(specs, params):
    assert len(spec) == p.ndim and set(spec) <= allowed, spec
