"""PPO: GAE by hand, FGO-masked gradients, clipping boundaries, the jitted step on a tiny model."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepcoder_jax.rl import fgo, ppo
from stepcoder_jax.rl.config import PPOConfig


def policy_loss(logprobs, old_logprobs, advantages, mask, clip_eps):
  """Reference: the clipped policy loss averaged over mask, built on ppo.policy_loss_terms."""
  loss, clipped, kl = ppo.policy_loss_terms(logprobs, old_logprobs, advantages, mask, clip_eps)
  return ppo.masked_mean(loss, mask), {
    "clip_frac": ppo.masked_mean(clipped, mask),
    "approx_kl": ppo.masked_mean(kl, mask),
  }


def value_loss(values, old_values, returns, mask, value_clip):
  """Reference: the value loss averaged over mask, built on ppo.value_loss_terms."""
  loss, clipped = ppo.value_loss_terms(values, old_values, returns, mask, value_clip)
  return ppo.masked_mean(loss, mask), {"value_clip_frac": ppo.masked_mean(clipped, mask)}


# ----------------------------------------------------------------------------- GAE and rewards


def test_gae_matches_hand_computation():
  # Row 0: prompt at t = 0, 1 (garbage values/rewards must be ignored), response t = 2..4.
  # Row 1: response t = 1, 2 then right padding.
  rewards = jnp.array([[5.0, 5.0, 0.0, 0.0, 1.0], [0.0, 0.0, -1.0, 3.0, 3.0]])
  values = jnp.array([[9.0, 9.0, 0.5, 0.4, 0.2], [0.0, 1.0, 2.0, 7.0, 7.0]])
  mask = jnp.array([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]])
  adv, ret = ppo.gae(rewards, values, mask, gamma=0.9, lam=0.8)
  # delta_t = r_t + 0.9 V_{t+1} - V_t ; A_t = delta_t + 0.72 A_{t+1}
  # row 0: d4 = 0.8, d3 = 0.18 - 0.4 = -0.22, d2 = 0.36 - 0.5 = -0.14
  #        A4 = 0.8, A3 = -0.22 + 0.576 = 0.356, A2 = -0.14 + 0.25632 = 0.11632
  # row 1: d2 = -1 - 2 = -3, d1 = 1.8 - 1 = 0.8; A2 = -3, A1 = 0.8 - 2.16 = -1.36
  np.testing.assert_allclose(adv, [[0, 0, 0.11632, 0.356, 0.8], [0, -1.36, -3.0, 0, 0]], atol=1e-6)
  np.testing.assert_allclose(ret, [[0, 0, 0.61632, 0.756, 1.0], [0, -0.36, -1.0, 0, 0]], atol=1e-6)
  # gamma = lam = 1: advantage = future reward sum minus the value.
  adv1, _ = ppo.gae(rewards, values, mask, 1.0, 1.0)
  np.testing.assert_allclose(adv1[0, 2:], [0.5, 0.6, 0.8], atol=1e-6)


def test_kl_penalty_and_reward_placement():
  resp = jnp.array([[0, 1, 1, 1, 0]])
  r = ppo.place_rewards(jnp.array([-0.3]), resp)
  np.testing.assert_array_equal(r, np.float32([[0, 0, 0, -0.3, 0]]))
  old = jnp.array([[-9.0, -1.0, -2.0, -0.5, -9.0]])
  ref = jnp.array([[0.0, -1.5, -1.0, -0.5, 0.0]])
  shaped = ppo.kl_penalized_rewards(r, old, ref, resp, 0.1)
  np.testing.assert_allclose(shaped, [[0, -0.05, 0.1, -0.3, 0]], atol=1e-7)


def test_whitening_over_masked_tokens():
  x = jnp.array([[100.0, 1.0, 2.0, 3.0], [-50.0, 4.0, 5.0, 6.0]])
  m = jnp.array([[0, 1, 1, 1], [0, 1, 1, 1]])
  w = ppo.masked_whiten(x, m)
  sel = np.asarray(w)[np.asarray(m) > 0]
  assert abs(sel.mean()) < 1e-6 and abs(sel.std() - 1) < 1e-4
  assert w[0, 0] == 0 and w[1, 0] == 0


def test_explained_variance_and_adaptive_kl():
  ret = jnp.array([[0.0, 1.0, 2.0, 3.0]])
  m = jnp.ones((1, 4))
  assert ppo.explained_variance(ret, ret, m) == pytest.approx(1.0)
  assert ppo.explained_variance(jnp.zeros_like(ret) + 1.5, ret, m) == pytest.approx(0.0)
  up = ppo.adaptive_kl_coef(jnp.float32(0.1), jnp.float32(12.0), 100, 6.0, 1000.0)
  down = ppo.adaptive_kl_coef(jnp.float32(0.1), jnp.float32(3.0), 100, 6.0, 1000.0)
  assert up == pytest.approx(0.1 * (1 + 0.2 * 0.1)) and down == pytest.approx(0.1 * (1 - 0.2 * 0.1))


# ----------------------------------------------------------------------------- losses


def test_fgo_masked_tokens_get_exactly_zero_gradient():
  rng = np.random.default_rng(0)
  logp = jnp.asarray(rng.normal(-1.0, 0.3, (2, 6)), jnp.float32)
  old = jnp.asarray(rng.normal(-1.0, 0.3, (2, 6)), jnp.float32)
  adv = jnp.asarray(rng.normal(0, 1, (2, 6)), jnp.float32)
  resp = jnp.array([[0, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0]], jnp.float32)
  fgo_mask = jnp.array([[1, 1, 0, 1, 0, 1], [1, 1, 1, 0, 1, 1]], jnp.float32)
  logp = logp.at[0, 2].set(80.0)  # absurd value on a masked token: must not leak (no inf * 0)
  mask = resp * fgo_mask
  grad = jax.grad(lambda lp: policy_loss(lp, old, adv, mask, 0.2)[0])(logp)
  g = np.asarray(grad)
  assert np.all(g[np.asarray(mask) == 0] == 0.0)
  assert np.all(np.isfinite(g))
  ratio = np.exp(np.asarray(logp - old))
  a = np.asarray(adv)
  unclipped = (np.asarray(mask) > 0) & ~(((a > 0) & (ratio > 1.2)) | ((a < 0) & (ratio < 0.8)))
  assert unclipped.sum() >= 3 and np.all(g[unclipped] != 0.0)
  # Changing anything at a masked token changes neither the loss nor the gradient.
  adv2 = adv.at[0, 4].set(1e6).at[1, 3].set(-1e6)
  loss1 = policy_loss(logp, old, adv, mask, 0.2)[0]
  loss2 = policy_loss(logp, old, adv2, mask, 0.2)[0]
  grad2 = jax.grad(lambda lp: policy_loss(lp, old, adv2, mask, 0.2)[0])(logp)
  assert loss1 == loss2
  np.testing.assert_array_equal(grad, grad2)


def _boundary(d):
  """(ratio, eps) with exp(d) == 1 + eps (d > 0) or 1 - eps (d < 0) exactly in float32."""
  r = jnp.exp(jnp.float32(d))
  return r, float(r - 1.0) if d > 0 else float(1.0 - r)


@pytest.mark.parametrize("d, sign", [(0.2, 1.0), (-0.2, -1.0)])
def test_clipping_exactly_at_boundary_still_has_gradient(d, sign):
  r, eps = _boundary(d)
  assert (1.0 + eps if d > 0 else 1.0 - eps) == float(r)
  logp = jnp.array([[jnp.float32(d)]])
  old = jnp.zeros((1, 1))
  adv = jnp.array([[sign]])
  m = jnp.ones((1, 1))
  fn = lambda lp: policy_loss(lp, old, adv, m, eps)
  (loss, aux), g = jax.value_and_grad(fn, has_aux=True)(logp)
  assert aux["clip_frac"] == 0.0
  assert float(loss) == pytest.approx(-sign * float(r))
  assert float(g[0, 0]) == pytest.approx(-sign * float(r))  # d(-A r)/d logp = -A r
  # A hair further out (a few float32 ulps of the ratio): clipped, constant loss, zero gradient.
  beyond = logp + sign * 1e-6
  assert float(jnp.exp(beyond[0, 0])) != float(r)
  (loss_b, aux_b), g_b = jax.value_and_grad(fn, has_aux=True)(beyond)
  assert aux_b["clip_frac"] == 1.0 and float(g_b[0, 0]) == 0.0
  assert float(loss_b) == pytest.approx(-sign * (1.0 + sign * eps))
  # Beyond the bound with the opposite advantage: the objective still pulls back, no clip.
  adv_o = -adv
  (_, aux_o), g_o = jax.value_and_grad(
    lambda lp: policy_loss(lp, old, adv_o, m, eps), has_aux=True
  )(beyond)
  assert aux_o["clip_frac"] == 0.0 and float(g_o[0, 0]) != 0.0


def test_value_loss_clipping():
  old = jnp.array([[0.0, 0.0, 0.0]])
  ret = jnp.array([[1.0, 1.0, 1.0]])
  m = jnp.array([[1.0, 1.0, 0.0]])
  v = jnp.array([[0.5, -0.5, 9.0]])
  loss, aux = value_loss(v, old, ret, m, 0.2)
  # token 0: unclipped 0.25 vs clipped (0.2 - 1)^2 = 0.64 -> 0.64 (clipped); token 1: 2.25 vs 1.44
  np.testing.assert_allclose(loss, 0.5 * (0.64 + 2.25) / 2, rtol=1e-6)
  assert aux["value_clip_frac"] == pytest.approx(0.5)
  loss0, _ = value_loss(v, old, ret, m, 0.0)
  np.testing.assert_allclose(loss0, 0.5 * (0.25 + 2.25) / 2, rtol=1e-6)


def test_fgo_off_mask_is_ones():
  offs = [(0, 2), (2, 5), (5, 5)]
  m = fgo.token_mask("ab\ncd", offs, {1}, {1, 2}, "failed", enabled=False)
  assert m.tolist() == [1, 1, 1]


# ----------------------------------------------------------------------------- the jitted step


def _tiny_models(seed=0):
  from flax import nnx
  from stepcoder_jax.models.config import ModelConfig
  from stepcoder_jax.models.decoder import Decoder
  from stepcoder_jax.models.value import ValueModel

  cfg = ModelConfig.tiny("llama", vocab_size=64, num_layers=1)
  policy = Decoder(cfg, rngs=nnx.Rngs(seed))
  return policy, ValueModel.from_policy(policy)


def _batch(policy, value, b=4, t=16, prompt=6, seed=0):
  """A rollout-shaped batch: left-padded prompts, responses of varying length, right padding."""
  from stepcoder_jax.rl import batching

  rng = np.random.default_rng(seed)
  prompts = [list(rng.integers(3, 64, prompt - i % 3)) for i in range(b)]
  responses = [list(rng.integers(3, 64, t - prompt - 1 - i % 4)) + [2] for i in range(b)]
  arr = batching.pack(prompts, responses, 0, prompt_len=prompt, response_len=t - prompt)
  batch = {k: jnp.asarray(v) for k, v in arr.items()}
  logp = ppo.policy_logprobs(
    policy,
    batch["tokens"],
    batch["positions"],
    batch["attention_mask"],
    chunk=8,
    with_entropy=False,
  )
  resp = batch["response_mask"]
  # Rollout log-probs a little off the current policy so ratios differ from 1.
  batch["old_logprobs"] = (logp + 0.05 * jnp.asarray(rng.normal(size=logp.shape))) * resp
  batch["ref_logprobs"] = (logp + 0.1 * jnp.asarray(rng.normal(size=logp.shape))) * resp
  batch["values"] = (
    ppo.value_estimates(value, batch["tokens"], batch["positions"], batch["attention_mask"]) * resp
  )
  batch["rewards"] = ppo.place_rewards(jnp.array([1.0, -0.3, -0.6, -1.0][:b] * (b // 4 or 1)), resp)
  fgo_mask = np.asarray(resp).copy()
  fgo_mask[:, prompt + 2 : prompt + 5] = 0  # a few unexecuted tokens
  batch["fgo_mask"] = jnp.asarray(fgo_mask)
  return batch


def _leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# One compiled step shared by the tests below (compiling dominates their time on CPU).
BASE = PPOConfig(
  policy_lr=1e-3,
  value_lr=1e-3,
  logprob_chunk=8,
  kl_coef=0.1,
  shuffle=False,
  max_grad_norm=0.0,
  value_max_grad_norm=0.0,
  adam_eps=1e-3,
)


@pytest.fixture(scope="module")
def setup():
  policy, value = _tiny_models()
  batch = _batch(policy, value)
  pgd, vgd, state = ppo.init_train_state(policy, value, BASE)
  step = ppo.make_ppo_step(pgd, vgd, BASE, donate=False)
  return policy, value, batch, state, step


def test_ppo_step_fgo_off_equals_mask_of_ones_same_compiled_fn(setup):
  _, _, batch, state, step = setup
  resp = np.asarray(batch["response_mask"])
  # FGO off: the rollout builds every row's mask with enabled=False (int8 ones).
  off = np.stack(
    [
      fgo.token_mask("x", [(0, 1)] * resp.shape[1], {1}, {1, 2}, "failed", enabled=False)
      for _ in resp
    ]
  )
  s_off, m_off = step(state, ppo.Batch.of({**batch, "fgo_mask": off}))
  ones = jnp.ones_like(batch["fgo_mask"])
  s_ones, m_ones = step(state, ppo.Batch.of({**batch, "fgo_mask": ones}))
  s_resp, m_resp = step(state, ppo.Batch.of({**batch, "fgo_mask": batch["response_mask"]}))
  s_fgo, m_fgo = step(state, ppo.Batch.of(batch))
  assert step.jitted._cache_size() == 1  # one compiled function for every mask
  assert _leaves_equal(s_off, s_ones) and _leaves_equal(m_off, m_ones)
  assert _leaves_equal(s_ones, s_resp)  # ones outside the response change nothing
  assert float(m_ones["fgo_density"]) == 1.0 and float(m_fgo["fgo_density"]) < 1.0
  assert not _leaves_equal(s_ones.policy, s_fgo.policy)  # a real mask does change the update
  assert _leaves_equal(s_ones.value, s_fgo.value)  # the value loss ignores FGO
  assert int(s_ones.step) == 1


def test_ppo_step_policy_loss_matches_vanilla_ppo(setup):
  policy, value, batch, state, step = setup
  cfg = BASE
  _, met = step(state, ppo.Batch.of({**batch, "fgo_mask": jnp.ones_like(batch["fgo_mask"])}))
  resp = batch["response_mask"]
  shaped = ppo.kl_penalized_rewards(
    batch["rewards"], batch["old_logprobs"], batch["ref_logprobs"], resp, cfg.kl_coef
  )
  adv, ret = ppo.gae(shaped, batch["values"], resp, cfg.gamma, cfg.lam)
  adv = ppo.masked_whiten(adv, resp)
  logp = ppo.policy_logprobs(
    policy,
    batch["tokens"],
    batch["positions"],
    batch["attention_mask"],
    chunk=8,
    with_entropy=False,
  )
  want, aux = policy_loss(logp, batch["old_logprobs"], adv, resp, cfg.clip_eps)
  np.testing.assert_allclose(met["policy_loss"], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(met["clip_frac"], aux["clip_frac"], atol=1e-6)
  np.testing.assert_allclose(met["approx_kl"], aux["approx_kl"], rtol=1e-4, atol=1e-7)
  v = ppo.value_estimates(value, batch["tokens"], batch["positions"], batch["attention_mask"])
  want_v, _ = value_loss(v, batch["values"], ret, resp, cfg.value_clip)
  np.testing.assert_allclose(met["value_loss"], want_v, rtol=1e-5, atol=1e-6)


def test_grad_accum_matches_one_big_microbatch(setup):
  policy, value, batch, state, step = setup
  s1, m1 = step(state, ppo.Batch.of(batch))
  cfg = dataclasses.replace(BASE, grad_accum=2)
  pgd, vgd, state2 = ppo.init_train_state(policy, value, cfg)
  s2, m2 = ppo.make_ppo_step(pgd, vgd, cfg, donate=False)(state2, ppo.Batch.of(batch))
  for k in ("policy_loss", "value_loss", "policy_grad_norm", "value_grad_norm"):
    np.testing.assert_allclose(m1[k], m2[k], rtol=1e-4, err_msg=k)
  for a, b in zip(jax.tree.leaves(s1.policy), jax.tree.leaves(s2.policy)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_ppo_step_reduces_losses_on_a_fixed_batch():
  policy, value = _tiny_models()
  batch = _batch(policy, value)
  cfg = PPOConfig(
    policy_lr=3e-3,
    value_lr=3e-3,
    logprob_chunk=8,
    epochs=4,
    minibatches=2,
    kl_coef=0.01,
    clip_eps=10.0,
    value_clip=0.0,
    adaptive_kl=True,
  )
  pgd, vgd, state = ppo.init_train_state(policy, value, cfg)
  step = ppo.make_ppo_step(pgd, vgd, cfg, donate=True)
  resp = batch["response_mask"]
  shaped = ppo.kl_penalized_rewards(
    batch["rewards"], batch["old_logprobs"], batch["ref_logprobs"], resp, cfg.kl_coef
  )
  adv, ret = ppo.gae(shaped, batch["values"], resp, cfg.gamma, cfg.lam)
  adv = ppo.masked_whiten(adv, resp)
  mask = resp * batch["fgo_mask"]

  def losses(st):
    from flax import nnx

    pol = nnx.merge(pgd, st.policy, st.policy_rest)
    val = nnx.merge(vgd, st.value, st.value_rest)
    args = (batch["tokens"], batch["positions"], batch["attention_mask"])
    lp = ppo.policy_logprobs(pol, *args, chunk=8, with_entropy=False)
    pl, _ = policy_loss(lp, batch["old_logprobs"], adv, mask, cfg.clip_eps)
    vl, _ = value_loss(ppo.value_estimates(val, *args), batch["values"], ret, resp, 0.0)
    return float(pl), float(vl)

  p0, v0 = losses(state)
  for _ in range(3):
    state, met = step(state, ppo.Batch.of(batch))
  p1, v1 = losses(state)
  assert all(np.isfinite(float(x)) for x in jax.tree.leaves(met))
  assert p1 < p0 - 0.1, (p0, p1)
  assert v1 < 0.5 * v0, (v0, v1)
  assert int(state.step) == 3
  assert float(state.kl_coef) != cfg.kl_coef  # the adaptive controller moved it


def test_bad_batch_fails_before_compiling(setup):
  policy, value, batch, _, _ = setup
  cfg = PPOConfig(minibatches=3, logprob_chunk=8)
  pgd, vgd, state = ppo.init_train_state(policy, value, cfg)
  step = ppo.make_ppo_step(pgd, vgd, cfg)
  with pytest.raises(ValueError, match="not divisible"):
    step(state, ppo.Batch.of(batch))
  with pytest.raises(ValueError, match="missing field"):
    step(state, ppo.Batch.of({k: v for k, v in batch.items() if k != "fgo_mask"}))
  assert step.jitted._cache_size() == 0


def test_explicit_shardings_pass_through_to_jit(setup):
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  policy, value, batch, state, step = setup
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  rep = NamedSharding(mesh, PartitionSpec())
  rows = NamedSharding(mesh, PartitionSpec("data"))
  batch_sh = ppo.Batch(**{k: rows for k in ppo.batch_fields(BASE)})
  pgd, vgd, _ = ppo.init_train_state(policy, value, BASE)
  sharded = ppo.make_ppo_step(
    pgd, vgd, BASE, in_shardings=(rep, batch_sh), out_shardings=(rep, rep), donate=False
  )
  s1, m1 = step(state, ppo.Batch.of(batch))
  s2, m2 = sharded(state, ppo.Batch.of(batch))
  assert all(x.sharding == rep for x in jax.tree.leaves(s2))
  for a, b in zip(jax.tree.leaves((s1, m1)), jax.tree.leaves((s2, m2))):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_response_start_projects_only_response_columns_with_the_same_values(setup):
  policy, value, batch, state, _ = setup
  args = (policy, batch["tokens"], batch["positions"], batch["attention_mask"])
  full, ent_full = ppo.policy_logprobs(*args, chunk=8)
  part, ent_part = ppo.policy_logprobs(*args, chunk=8, response_start=6)  # the prompt bucket
  np.testing.assert_allclose(part[:, 6:], full[:, 6:], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(ent_part[:, 6:], ent_full[:, 6:], rtol=1e-6, atol=1e-6)
  assert float(jnp.abs(part[:, :6]).max()) == 0.0
  # the step built with response_start takes the same update as the full one
  s_full = ppo.make_ppo_step(*ppo.init_train_state(policy, value, BASE)[:2], BASE, donate=False)
  s_part = ppo.make_ppo_step(
    *ppo.init_train_state(policy, value, BASE)[:2], BASE, donate=False, response_start=6
  )
  a, ma = s_full(state, ppo.Batch.of(batch))
  b, mb = s_part(state, ppo.Batch.of(batch))
  for k in ma:
    np.testing.assert_allclose(
      np.asarray(mb[k]), np.asarray(ma[k]), rtol=1e-5, atol=1e-6, err_msg=k
    )


def test_policy_loss_is_normalized_by_response_tokens_not_fgo_kept_tokens(setup):
  """The four ablation arms share one normalization: FGO zeroes the masked tokens' terms and
  leaves the others' weight alone (dividing by the kept count would rescale them by 1/density)."""
  policy, _, batch, state, step = setup
  _, met = step(state, ppo.Batch.of(batch))
  resp = batch["response_mask"]
  shaped = ppo.kl_penalized_rewards(
    batch["rewards"], batch["old_logprobs"], batch["ref_logprobs"], resp, BASE.kl_coef
  )
  adv, _ = ppo.gae(shaped, batch["values"], resp, BASE.gamma, BASE.lam)
  adv = ppo.masked_whiten(adv, resp, min_std=BASE.whiten_min_std)
  logp = ppo.policy_logprobs(
    policy,
    batch["tokens"],
    batch["positions"],
    batch["attention_mask"],
    chunk=8,
    with_entropy=False,
  )
  kept = resp * batch["fgo_mask"]
  terms, _, _ = ppo.policy_loss_terms(logp, batch["old_logprobs"], adv, kept, BASE.clip_eps)
  assert float(jnp.sum(kept)) < float(jnp.sum(resp))  # the mask really drops tokens
  want = float(jnp.sum(terms)) / float(jnp.sum(resp))
  np.testing.assert_allclose(met["policy_loss"], want, rtol=1e-5, atol=1e-7)
