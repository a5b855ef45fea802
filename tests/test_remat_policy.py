"""`model.remat` policies ('none', 'full', 'dots'; True/False as the older aliases) change what a
block keeps for the backward pass, never the PPO step's loss or gradients (fp32, 1e-5 relative)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from stepcoder_jax.errors import UserError
from stepcoder_jax.models.config import ModelConfig, ModelSpec, remat_policy
from stepcoder_jax.models.decoder import Decoder
from stepcoder_jax.models.value import ValueModel
from stepcoder_jax.rl import batching, ppo
from stepcoder_jax.rl.config import PPOConfig

CFG = PPOConfig(logprob_chunk=4, kl_coef=0.1, shuffle=False, max_grad_norm=0.0, adam_eps=1e-3)
PROMPT, RESPONSE = 6, 6


def _batch(policy) -> dict:
  """Left-padded prompts, responses of varying length (longer than Gemma tiny's window of 4)."""
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(3, 64, PROMPT - i % 3)) for i in range(4)]
  responses = [list(rng.integers(3, 64, RESPONSE - 1 - i % 3)) + [2] for i in range(4)]
  arr = batching.pack(prompts, responses, 0, prompt_len=PROMPT, response_len=RESPONSE)
  b = {k: jnp.asarray(v) for k, v in arr.items()}
  resp = b["response_mask"].astype(jnp.float32)
  noise = jnp.asarray(rng.normal(size=resp.shape), jnp.float32)
  b.update(
    response_mask=resp,
    loss_mask=resp,
    old_logprobs=-2.0 + 0.1 * noise,  # ratios away from 1: some tokens clip
    advantages=jnp.asarray(rng.normal(size=resp.shape), jnp.float32) * resp,
  )
  return b


def _assert_close(got, want, what: str):
  """Equal within 1e-5 of the reference's largest magnitude, leaf by leaf."""
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(b).max()), err_msg=what)


def _objective_and_grads(cfg: ModelConfig, batch: dict):
  policy = Decoder(cfg, nnx.Rngs(1))
  gd, params, rest = nnx.split(policy, nnx.Param, ...)

  @jax.jit
  def run(params):
    def loss(p):
      model = nnx.merge(gd, p, rest)
      logp, ent = ppo.policy_logprobs(
        model,
        batch["tokens"],
        batch["positions"],
        batch["attention_mask"],
        chunk=CFG.logprob_chunk,
        response_start=PROMPT,
      )
      denom = jnp.sum(batch["response_mask"])
      return ppo.token_policy_objective(logp, ent, batch, denom, CFG, CFG.kl_coef)[0]

    return jax.value_and_grad(loss)(params)

  return run(params)


@pytest.mark.parametrize("scan", [False, True], ids=["loop", "scan"])
def test_every_policy_gives_the_plain_paths_loss_and_gradients(scan):
  cfg = ModelConfig.tiny("gemma3", vocab_size=64, scan_layers=scan)
  batch = _batch(Decoder(cfg, nnx.Rngs(1)))
  want = _objective_and_grads(cfg.replace(remat=False), batch)
  assert float(jnp.abs(jax.tree.leaves(want[1])[0]).max()) > 0  # gradients that can differ
  for remat in ("full", "dots"):  # True and 'none' take the same paths as 'full' and False
    got = _objective_and_grads(cfg.replace(remat=remat), batch)
    _assert_close(got, want, f"remat={remat!r} scan={scan}")


@pytest.mark.slow
def test_dots_ppo_step_with_a_critic_matches_no_remat():
  """The whole jitted step (policy + value model, Adam): same metrics and new parameters."""
  cfg = ModelConfig.tiny("gemma3", vocab_size=64, scan_layers=True)
  out = {}
  for remat in (False, "dots"):
    policy = Decoder(cfg.replace(remat=remat), nnx.Rngs(1))
    value = ValueModel.from_policy(policy)
    b = _batch(policy)
    resp = b["response_mask"]
    batch = ppo.Batch.of(
      {
        "tokens": b["tokens"],
        "positions": b["positions"],
        "attention_mask": b["attention_mask"],
        "response_mask": b["response_mask"],
        "old_logprobs": b["old_logprobs"] * resp,
        "ref_logprobs": (b["old_logprobs"] - 0.05) * resp,
        "values": 0.1 * b["advantages"],
        "rewards": ppo.place_rewards(jnp.array([1.0, -0.3, -0.6, -1.0]), resp),
        "fgo_mask": resp,
      }
    )
    pgd, vgd, state = ppo.init_train_state(policy, value, CFG)
    out[remat] = ppo.make_ppo_step(pgd, vgd, CFG, donate=False)(state, batch)
  (s0, m0), (s1, m1) = out[False], out["dots"]
  for k in ("loss", "policy_loss", "value_loss", "policy_grad_norm", "value_grad_norm"):
    np.testing.assert_allclose(m1[k], m0[k], rtol=1e-5, err_msg=k)
  _assert_close((s1.policy, s1.value), (s0.policy, s0.value), "new parameters")


def test_policy_names_and_their_aliases():
  assert [remat_policy(v) for v in (True, False, None, "full", "dots", "none")] == [
    "full",
    "none",
    "none",
    "full",
    "dots",
    "none",
  ]
  with pytest.raises(ValueError, match="remat"):
    ModelConfig.tiny("llama", remat="all")
  with pytest.raises(UserError, match="model.remat"):
    ModelSpec(remat="some")
  assert ModelSpec().remat_override is None  # False keeps the loaded model's own setting
  assert ModelSpec(remat=True).remat_override == "full"
  assert ModelSpec(remat="none").remat_override == "none"  # an explicit 'none' turns it off
  model = Decoder(ModelConfig.tiny("llama", vocab_size=64), nnx.Rngs(0))
  model.set_remat("dots")
  assert model.cfg.remat == "dots"
