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
  scored = np.asarray(logp[:, p - 1 : p - 1 + drawn.shape[1]])
  np.testing.assert_allclose(scored, np.asarray(out.logprobs)[:, :6], atol=2e-5)
  # A softmax over 20 rows: each drawn token is likelier than under all 64.
  full, _ = _pair()
  full_logp, _ = logprobs.sequence_logprobs(full, seq, left_pad_positions(m), m, chunk=3)
  assert np.all(scored > np.asarray(full_logp[:, p - 1 : p - 1 + drawn.shape[1]]))


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


# ----------------------------------------------------------------------------- PPO over the subset


def _subset_batch(policy, b=4, prompt=6, resp=9, seed=0):
  """A rollout-shaped batch whose responses use subset ids only (as the sampler draws them);
  prompts may use any id (they are never scored)."""
  from stepcoder_jax.rl import batching, ppo

  rng = np.random.default_rng(seed)
  prompts = [list(rng.integers(3, V, prompt - i % 3)) for i in range(b)]
  responses = [list(rng.choice(SUBSET, resp - i % 4)) for i in range(b)]
  arr = {
    k: jnp.asarray(v)
    for k, v in batching.pack(
      prompts, responses, 0, prompt_len=prompt, response_len=resp + 1
    ).items()
  }
  logp = ppo.policy_logprobs(
    policy,
    arr["tokens"],
    arr["positions"],
    arr["attention_mask"],
    chunk=4,
    with_entropy=False,
    response_start=prompt,
  )
  m = arr["response_mask"]
  arr.update(
    old_logprobs=logp * m,
    ref_logprobs=(logp - 0.1) * m,
    fgo_mask=m,
    rewards=ppo.place_rewards(jnp.array([1.0, -0.3, -0.6, -1.0]), m),
    group=jnp.array([0, 0, 2, 2], jnp.int32),
  )
  return arr


def _by_hand_logprobs(model, batch):
  """log-softmax over the SUBSET columns of the full logits, from plain numpy-like jnp ops."""
  hidden, _ = model(batch["tokens"], batch["positions"], batch["attention_mask"])
  w = model.embed[...] if model.cfg.tie_embeddings else model.lm_head[...]
  logits = jnp.einsum("btd,vd->btv", hidden, w)[:, :-1][..., jnp.asarray(SUBSET)]
  logz = jax.nn.logsumexp(logits, axis=-1)
  col = jnp.searchsorted(jnp.asarray(SUBSET), batch["tokens"][:, 1:])
  col = jnp.clip(col, 0, len(SUBSET) - 1)
  logp = jnp.take_along_axis(logits, col[..., None], axis=-1)[..., 0] - logz
  p = jnp.exp(logits - logz[..., None])
  ent = logz - jnp.sum(p * logits, axis=-1)
  pad = lambda x: jnp.pad(x, ((0, 0), (1, 0)))
  return pad(logp), pad(ent)


def test_ppo_loss_and_grad_over_the_subset_equal_the_hand_computation():
  from stepcoder_jax.rl import ppo
  from stepcoder_jax.rl.config import PPOConfig

  _, model = _pair()
  batch = _subset_batch(model)
  m = batch["response_mask"].astype(jnp.float32)
  mb = {
    "loss_mask": m,
    "old_logprobs": batch["old_logprobs"] - 0.05 * m,
    "advantages": jnp.linspace(-1.0, 1.0, m.size).reshape(m.shape) * m,
  }
  cfg = PPOConfig(entropy_coef=0.01)
  gd, params, rest = nnx.split(model, nnx.Param, ...)

  def objective(params, scorer):
    mdl = nnx.merge(gd, params, rest)
    logp, ent = scorer(mdl)
    return ppo.token_policy_objective(logp, ent, mb, jnp.sum(m), cfg, 0.0)[0]

  ours = lambda mdl: ppo.policy_logprobs(
    mdl, batch["tokens"], batch["positions"], batch["attention_mask"], chunk=4, response_start=6
  )
  hand = lambda mdl: tuple(x * m for x in _by_hand_logprobs(mdl, batch))
  ours_masked = lambda mdl: tuple(x * m for x in ours(mdl))
  (l1, g1), (l2, g2) = (jax.value_and_grad(objective)(params, f) for f in (ours_masked, hand))
  np.testing.assert_allclose(float(l1), float(l2), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  # Over the full vocabulary the loss is another number: the subset really is what is scored.
  full, _ = _pair()
  full_logp = ppo.policy_logprobs(
    full, batch["tokens"], batch["positions"], batch["attention_mask"], chunk=4, response_start=6
  )
  assert float(jnp.max(jnp.abs((full_logp[0] - ours(model)[0]) * m))) > 0.1


@pytest.mark.parametrize("advantage", ["gae", "grpo"])
def test_first_step_ratio_is_one_when_old_logprobs_come_from_the_same_path(advantage):
  from stepcoder_jax.models.value import ValueModel
  from stepcoder_jax.rl import ppo
  from stepcoder_jax.rl.config import PPOConfig

  _, model = _pair()
  batch = _subset_batch(model)
  cfg = PPOConfig(advantage=advantage, minibatches=1, epochs=1, logprob_chunk=4, shuffle=False)
  value = None
  if advantage == "gae":
    value = ValueModel.from_policy(model)
    batch["values"] = (
      ppo.value_estimates(value, batch["tokens"], batch["positions"], batch["attention_mask"])
      * batch["response_mask"]
    )
  pgd, vgd, state = ppo.init_train_state(model, value, cfg)
  step = ppo.make_ppo_step(pgd, vgd, cfg, donate=False, response_start=6)
  _, met = step(state, ppo.Batch.of(batch))
  assert float(met["approx_kl"]) == 0.0 and float(met["clip_frac"]) == 0.0
  assert np.isfinite(float(met["policy_loss"])) and float(met["entropy"]) > 0
  # The entropy is over the 20 subset rows: at most log 20 (the full vocabulary allows log 64).
  assert float(met["entropy"]) <= np.log(len(SUBSET)) + 1e-5


# ----------------------------------------------------------------------------- shipped files


def test_named_and_path_vocabularies_resolve_and_bad_ones_raise_user_errors(tmp_path):
  from stepcoder_jax.errors import UserError
  from stepcoder_jax.models import output_vocab

  cfg = ModelConfig.tiny("llama", vocab_size=V)
  path = tmp_path / "v.npz"
  output_vocab.save(path, SUBSET, V, "test")
  assert output_vocab.apply(cfg, str(path), required=[3, 6]).output_vocab == SUBSET
  assert output_vocab.apply(cfg, None) is cfg
  shipped = output_vocab.load("gemma3_code", 262144)
  assert 30000 < len(shipped) < 262144 and list(shipped) == sorted(shipped)
  with pytest.raises(UserError, match="'no_such_vocab' is neither a file nor a shipped name"):
    output_vocab.apply(cfg, "no_such_vocab")
  with pytest.raises(UserError, match="missing.npz: no such file"):
    output_vocab.apply(cfg, str(tmp_path / "missing.npz"))
  big = tmp_path / "big.npz"
  output_vocab.save(big, [5, 70], 100, "test")
  with pytest.raises(UserError, match=r"big.npz: token id 70 >= the model's vocabulary size 64"):
    output_vocab.apply(cfg, str(big))
  with pytest.raises(UserError, match=r"lacks the special id\(s\) \[2\]"):
    output_vocab.apply(cfg, str(path), required=[2])
  junk = tmp_path / "junk.npz"
  junk.write_bytes(b"not a zip")
  with pytest.raises(UserError, match="junk.npz: not an output vocabulary file"):
    output_vocab.apply(cfg, str(junk))


def test_rollout_with_an_output_vocab_samples_and_scores_inside_the_subset(monkeypatch, tmp_path):
  from test_sampler_logprobs import _collect
  from stepcoder_jax.models.tokenizer import tiny_tokenizer

  tok = tiny_tokenizer()
  keep = {tok.eos_token_id, tok.pad_token_id, tok.bos_token_id}
  subset = tuple(sorted(set(range(0, len(tok), 3)) | keep))  # a third of the ids
  monkeypatch.chdir(tmp_path)
  outs = {s: _collect(s, {"output_vocab": subset}, [])[0] for s in (True, False)}
  resp = np.asarray(outs[True].response_mask) > 0
  drawn = np.asarray(outs[True].tokens)[resp]
  assert drawn.size > 8 and set(drawn.tolist()) <= set(subset)
  # Old log-probs from the sampler and from the scoring forward: one softmax over the subset.
  old = {s: np.asarray(b.old_logprobs)[resp] for s, b in outs.items()}
  np.testing.assert_allclose(old[True], old[False], atol=1e-5)
  assert np.all(old[True] > logprobs.OUTSIDE_VOCAB_LOGP / 2) and np.all(old[True] < 0)
  ref = np.asarray(outs[True].ref_logprobs)[resp]
  np.testing.assert_allclose(ref, old[True], atol=1e-5)  # reference = starting policy
