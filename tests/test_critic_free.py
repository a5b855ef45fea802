"""Critic-free advantages (ppo.advantage = 'grpo' | 'rloo'): group statistics by hand, no value
model anywhere in the state, FGO and the loss normalization unchanged, the jitted step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepcoder_jax.errors import UserError
from stepcoder_jax.rl import ppo
from stepcoder_jax.rl.config import PPOConfig
from test_ppo import _batch, _tiny_models

# The KL in the reward (these tests' subject); critic-free runs put it in the loss by default.
GRPO = PPOConfig(
  advantage="grpo",
  policy_lr=1e-3,
  logprob_chunk=8,
  kl_coef=0.1,
  shuffle=False,
  max_grad_norm=0.0,
  adam_eps=1e-3,
  kl_in_loss=False,
)


# ----------------------------------------------------------------------------- estimators


def test_grpo_by_hand_equal_group_zero_and_std_floor():
  # Groups: {0, 1, 2} rewards 1, -0.3, -0.3; {3, 4} equal; {5, 6} differ by 0.02 (< floor);
  # row 7 alone. Ids need not be contiguous or start at the group's first row.
  r = jnp.array([1.0, -0.3, -0.3, -1.0, -1.0, -0.6, -0.62, 0.5])
  g = jnp.array([4, 4, 4, 0, 0, 7, 7, 2])
  adv = np.asarray(ppo.grpo_advantages(r, g, scale_std=True, min_std=0.1))
  mean = (1.0 - 0.6) / 3
  std = np.sqrt(((1 - mean) ** 2 + 2 * (-0.3 - mean) ** 2) / 3)
  np.testing.assert_allclose(adv[:3], (np.array([1.0, -0.3, -0.3]) - mean) / std, rtol=1e-5)
  np.testing.assert_array_equal(adv[3:5], [0.0, 0.0])  # equal rewards: no signal
  # std 0.01 < 0.1: divided by the floor, not blown up to +-1.
  np.testing.assert_allclose(adv[5:7], [0.01 / 0.1, -0.01 / 0.1], rtol=1e-4)
  assert adv[7] == 0.0  # a group of one
  unscaled = np.asarray(ppo.grpo_advantages(r, g, scale_std=False))
  np.testing.assert_allclose(unscaled[:3], np.array([1.0, -0.3, -0.3]) - mean, rtol=1e-5)
  np.testing.assert_allclose(unscaled[5:7], [0.01, -0.01], rtol=1e-4)


def test_rloo_baseline_excludes_the_sample_itself():
  r = jnp.array([1.0, -0.3, -0.6, -1.0, 0.7, 0.7, 0.2])
  g = jnp.array([0, 0, 0, 0, 4, 4, 6])
  adv = np.asarray(ppo.rloo_advantages(r, g))
  others = [
    (-0.3 - 0.6 - 1.0) / 3,
    (1.0 - 0.6 - 1.0) / 3,
    (1.0 - 0.3 - 1.0) / 3,
    (1.0 - 0.3 - 0.6) / 3,
  ]
  np.testing.assert_allclose(adv[:4], np.array([1.0, -0.3, -0.6, -1.0]) - others, rtol=1e-5)
  # Including itself would shrink each advantage by (n - 1) / n: not what RLOO computes.
  assert abs(adv[0] - (1.0 - float(np.mean(r[:4])))) > 0.1
  np.testing.assert_array_equal(adv[4:6], [0.0, 0.0])
  assert adv[6] == 0.0  # no other sample: no baseline, no signal


def test_config_rejects_unknown_estimator_and_bad_floor():
  with pytest.raises(UserError, match="ppo.advantage"):
    PPOConfig(advantage="ppo2")
  with pytest.raises(UserError, match="ppo.grpo_min_std"):
    PPOConfig(advantage="grpo", grpo_min_std=0.0)
  assert PPOConfig(advantage="rloo").critic_free and not PPOConfig().critic_free


# ----------------------------------------------------------------------------- state and step


@pytest.fixture(scope="module")
def grpo_setup():
  policy, value = _tiny_models()
  batch = _batch(policy, value)
  batch = {k: v for k, v in batch.items() if k != "values"}
  batch["group"] = jnp.array([0, 0, 2, 2], jnp.int32)
  pgd, vgd, state = ppo.init_train_state(policy, None, GRPO)
  step = ppo.make_ppo_step(pgd, vgd, GRPO, donate=False)
  return policy, batch, state, step


def test_critic_free_state_holds_no_value_parameters(grpo_setup):
  from stepcoder_jax import sharding
  from stepcoder_jax.config import MeshConfig
  from stepcoder_jax.rl import spmd

  policy, _, state, _ = grpo_setup
  assert state.value is None and state.value_rest is None and state.value_opt is None
  paths = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(state)]
  assert not [p for p in paths if "backbone" in p or "value_head" in p or "value_bias" in p]
  # Exactly the GAE state minus its value parts.
  gae_state = ppo.init_train_state(policy, _tiny_models()[1], PPOConfig())[2]
  value_leaves = jax.tree.leaves((gae_state.value, gae_state.value_rest, gae_state.value_opt))
  assert len(value_leaves) > 0
  assert len(jax.tree.leaves(state)) == len(jax.tree.leaves(gae_state)) - len(value_leaves)
  with pytest.raises(ValueError, match="takes no value model"):
    ppo.init_train_state(policy, _tiny_models()[1], GRPO)
  mesh = sharding.make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1])
  pl = spmd.make_placement(state, mesh, sharding.make_rules())
  assert pl.state.value is None and pl.state.value_opt is None


def test_grpo_step_matches_hand_computation_and_has_no_value_outputs(grpo_setup):
  policy, batch, state, step = grpo_setup
  new, met = step(state, ppo.Batch.of(batch))
  resp = batch["response_mask"].astype(jnp.float32)
  kl = jnp.sum(jnp.where(resp > 0, batch["old_logprobs"] - batch["ref_logprobs"], 0.0), axis=1)
  seq = jnp.sum(batch["rewards"], axis=1) - GRPO.kl_coef * kl
  # Groups {0, 1} and {2, 3}: (r - mean) / max(std, 0.1) with std = |r0 - r1| / 2.
  seq_np = np.asarray(seq)
  want_adv = []
  for a, b in ((0, 1), (2, 3)):
    d = (seq_np[a] - seq_np[b]) / 2
    want_adv += [d / max(abs(d), 0.1), -d / max(abs(d), 0.1)]
  adv = ppo.group_advantages(seq, batch["group"], GRPO)
  np.testing.assert_allclose(adv, want_adv, rtol=1e-5)
  logp = ppo.policy_logprobs(
    policy,
    batch["tokens"],
    batch["positions"],
    batch["attention_mask"],
    chunk=8,
    with_entropy=False,
  )
  kept = resp * batch["fgo_mask"]
  terms, _, _ = ppo.policy_loss_terms(
    logp, batch["old_logprobs"], adv[:, None] * resp, kept, GRPO.clip_eps
  )
  np.testing.assert_allclose(
    met["policy_loss"], float(jnp.sum(terms) / jnp.sum(resp)), rtol=1e-5, atol=1e-7
  )
  assert new.value is None and new.value_opt is None and int(new.step) == 1
  assert not any(k.startswith("value") or k in ("explained_variance", "return_mean") for k in met)
  moved = max(
    float(jnp.max(jnp.abs(a - b)))
    for a, b in zip(jax.tree.leaves(new.policy), jax.tree.leaves(state.policy))
  )
  assert moved > 1e-5  # a real update, not a no-op
  with pytest.raises(ValueError, match="missing field"):
    step(state, ppo.Batch.of({k: v for k, v in batch.items() if k != "group"}))
  with pytest.raises(ValueError, match="group ids"):
    step(state, ppo.Batch.of({**batch, "group": jnp.array([0, 0, 4, 4], jnp.int32)}))


def test_group_of_equal_rewards_leaves_the_policy_alone(grpo_setup):
  _, batch, state, step = grpo_setup
  equal = {
    **batch,
    "rewards": jnp.where(batch["rewards"] != 0, -1.0, 0.0),
    "ref_logprobs": batch["old_logprobs"],
  }  # no KL difference either
  new, met = step(state, ppo.Batch.of(equal))
  assert float(met["policy_grad_norm"]) == 0.0 and float(met["policy_loss"]) == 0.0
  for a, b in zip(jax.tree.leaves(new.policy), jax.tree.leaves(state.policy)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kl_in_loss", [False, True])
@pytest.mark.parametrize("advantage", ["grpo", "rloo"])
def test_fgo_masked_tokens_zero_gradient_others_unchanged(advantage, kl_in_loss):
  """The step's token objective under a critic-free estimator: a token FGO drops has exactly
  zero gradient, and dropping it leaves every other token's gradient as it was."""
  cfg = dataclasses.replace(GRPO, advantage=advantage, kl_in_loss=kl_in_loss, entropy_coef=0.01)
  rng = np.random.default_rng(1)
  shape = (4, 8)
  resp = np.zeros(shape, np.float32)
  resp[:, 2:] = 1
  resp[3, 6:] = 0
  seq_adv = ppo.group_advantages(jnp.array([1.0, -0.3, -0.6, -1.0]), jnp.array([0, 0, 0, 0]), cfg)
  mb = {
    "old_logprobs": jnp.asarray(rng.normal(-1, 0.3, shape), jnp.float32),
    "ref_logprobs": jnp.asarray(rng.normal(-1, 0.3, shape), jnp.float32),
    "advantages": seq_adv[:, None] * resp,
  }
  logp = jnp.asarray(rng.normal(-1, 0.3, shape), jnp.float32)
  ent = jnp.asarray(rng.uniform(0.5, 2.0, shape), jnp.float32)
  denom = jnp.sum(resp)

  def grads(fgo_mask):
    m = {**mb, "loss_mask": jnp.asarray(resp * fgo_mask)}
    f = lambda lp, e: ppo.token_policy_objective(lp, e, m, denom, cfg, 0.1)[0]
    return [np.asarray(x) for x in jax.grad(f, argnums=(0, 1))(logp, ent)]

  fgo_a = np.ones(shape, np.float32)
  fgo_a[0, 3] = fgo_a[2, 5] = 0
  fgo_b = fgo_a.copy()
  fgo_b[1, 4] = 0  # one more unexecuted token
  ga, gb = grads(fgo_a), grads(fgo_b)
  for g_a, g_b in zip(ga, gb):
    assert g_a[0, 3] == 0.0 and g_a[2, 5] == 0.0 and g_b[1, 4] == 0.0
    assert g_a[1, 4] != 0.0
    keep = (resp * fgo_b) > 0
    np.testing.assert_array_equal(g_a[keep], g_b[keep])
    assert np.all(g_a[resp == 0] == 0.0)


def test_kl_in_loss_moves_the_kl_from_the_reward_to_a_loss_term(grpo_setup):
  policy, batch, state, _ = grpo_setup
  cfg = dataclasses.replace(GRPO, kl_in_loss=True)
  pgd, vgd, st = ppo.init_train_state(policy, None, cfg)
  _, met = ppo.make_ppo_step(pgd, vgd, cfg, donate=False)(st, ppo.Batch.of(batch))
  resp = batch["response_mask"].astype(jnp.float32)
  logp = ppo.policy_logprobs(
    policy,
    batch["tokens"],
    batch["positions"],
    batch["attention_mask"],
    chunk=8,
    with_entropy=False,
  )
  kept = resp * batch["fgo_mask"]
  d = np.asarray(batch["ref_logprobs"] - logp)
  k3 = np.where(np.asarray(kept) > 0, np.exp(d) - d - 1, 0.0)
  np.testing.assert_allclose(met["kl_loss"], k3.sum() / float(jnp.sum(resp)), rtol=1e-5)
  assert float(met["kl_loss"]) > 0
  # The advantages see the outcome rewards alone (no KL in the sequence reward).
  adv = ppo.group_advantages(jnp.sum(batch["rewards"], axis=1), batch["group"], cfg)
  terms, _, _ = ppo.policy_loss_terms(
    logp, batch["old_logprobs"], adv[:, None] * resp, kept, cfg.clip_eps
  )
  np.testing.assert_allclose(
    met["policy_loss"], float(jnp.sum(terms) / jnp.sum(resp)), rtol=1e-5, atol=1e-7
  )
  np.testing.assert_allclose(
    met["loss"], float(met["policy_loss"]) + cfg.kl_coef * float(met["kl_loss"]), rtol=1e-6
  )


# ----------------------------------------------------------------------------- trainer pieces


def test_group_ids_follow_problems_and_isolate_padding():
  from stepcoder_jax.rl.rollout import group_ids

  @dataclasses.dataclass
  class Row:
    problem: object
    padding: bool = False

  @dataclasses.dataclass
  class P:
    id: str

  a, b = P("a"), P("b")
  rows = [Row(a), Row(a), Row(b), Row(b), Row(a, padding=True), Row(a, padding=True)]
  assert group_ids(rows).tolist() == [0, 0, 2, 2, 4, 5]


def test_trainer_refuses_critic_free_without_groups():
  from stepcoder_jax.rl.config import TrainConfig
  from stepcoder_jax.runs.trainer import _check_config

  with pytest.raises(UserError, match="train.samples_per_problem: 1 .*'grpo'"):
    _check_config(TrainConfig(samples_per_problem=1), GRPO)
  _check_config(TrainConfig(samples_per_problem=2), GRPO)
