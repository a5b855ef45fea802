"""FGO through the real rollout path (issue 10, "Must show"): a sampled program with a dead branch
gets zero policy gradient on that branch's tokens.

Real pieces: the tiny Llama policy, the Trainer's iteration (prompts, cutting, the execution pool
with coverage, FGO masks, packing, the rollout forwards, the jitted ppo_step). Only the sampler is
fixed, so the sampled program is known: its `return -x` branch is never reached by the tests.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepcoder_jax import completion
from stepcoder_jax.data.record import Problem
from stepcoder_jax.execution import ExecutionConfig, ExecutionPool
from stepcoder_jax.rl import ppo
from stepcoder_jax.config import CheckpointConfig, MeshConfig
from stepcoder_jax.rl.config import CCCSConfig, FGOConfig, PPOConfig, TrainConfig

PROGRAM = (
  "def f(x):\n"
  "    if x > 0:\n"
  "        return x\n"
  "    return -x\n"
)  # dead: every test calls f with x > 0
DEAD_LINE = "    return -x\n"
PROBLEM = Problem(
  id="t/abs",
  question="Return the absolute value of x.",
  test_kind="call",
  fn_name="f",
  inputs=[[1], [2], [5]],
  outputs=[1, 2, 5],
)


@pytest.fixture(scope="module")
def rollout_batch(tmp_path_factory):
  """The batch the Trainer hands to ppo_step for the forced program, and the forced response."""
  from stepcoder_jax.models.loading import load_model
  from stepcoder_jax.runs.trainer import Models, Trainer

  cfg, model, tok = load_model("tiny-llama")
  forced = tok(PROGRAM + "```\n", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

  def fixed_sampler(state, prompt_ids, rng):
    return [list(forced) for _ in prompt_ids]

  train_cfg = TrainConfig(
    work_dir=str(tmp_path_factory.mktemp("run")),
    problems_per_iteration=1,
    samples_per_problem=2,
    max_prompt_tokens=256,
    max_new_tokens=64,
    logprob_chunk=32,
  )
  ppo_cfg = PPOConfig(minibatches=1, policy_lr=1e-3, value_lr=1e-3)
  captured = {}
  with ExecutionPool(ExecutionConfig(workers=1, coverage=True)) as pool:
    trainer = Trainer(
      Models(cfg, model, tok),
      [PROBLEM],
      cfg=train_cfg,
      ppo_cfg=ppo_cfg,
      cccs_cfg=CCCSConfig(enabled=False),
      fgo_cfg=FGOConfig(enabled=True),
      mesh_cfg=MeshConfig(),
      ckpt_cfg=CheckpointConfig(),
      pool=pool,
      sampler=fixed_sampler,
    )
    real_step = trainer.ppo_step

    def recording_step(state, batch):  # the real jitted step, its operand kept for the test
      captured.update(
        {
          f.name: np.asarray(jax.device_get(getattr(batch, f.name)))
          for f in dataclasses.fields(batch)
          if getattr(batch, f.name) is not None
        }
      )
      return real_step(state, batch)

    trainer.ppo_step = recording_step
    metrics = trainer.iterate()
  return captured, forced, tok, trainer, ppo_cfg, metrics


def _dead_token_columns(forced, tok, prompt_len):
  """Columns of the tokens lying wholly on the dead line, from the cut training made."""
  cut = completion.cut(tok, forced, ("\n```",), (tok.eos_token_id,))
  assert cut.text == PROGRAM.rstrip("\n") or cut.text == PROGRAM, repr(cut.text)
  lo = PROGRAM.index(DEAD_LINE)
  hi = lo + len(DEAD_LINE)
  dead = [
    prompt_len + t
    for t, (a, b) in enumerate(cut.offsets)
    if b > a and lo <= a and b <= min(hi, len(cut.text) + 1) and a < len(cut.text)
  ]
  return dead, len(cut.ids)


def test_dead_branch_tokens_get_no_fgo_weight_in_the_batch(rollout_batch):
  batch, forced, tok, trainer, _, metrics = rollout_batch
  assert metrics["outcome/failed"] == 0 and metrics["pass_rate"] == 1.0  # judged for real
  assert metrics["truncated_rate"] == 0.0  # the fence ended every response
  p = batch["tokens"].shape[1] - trainer.rollout.response_len  # the batch's prompt columns
  dead, n_resp = _dead_token_columns(forced, tok, p)
  assert len(dead) >= 3  # indentation, `return`, `-x` at least
  for row in range(batch["tokens"].shape[0]):
    resp = batch["response_mask"][row]
    fgo = batch["fgo_mask"][row]
    assert resp[p : p + n_resp].all() and not resp[p + n_resp :].any()
    assert (fgo[dead] == 0).all(), fgo[p : p + n_resp]
    live = [c for c in range(p, p + n_resp) if c not in dead]
    assert (fgo[live] == 1).all(), fgo[p : p + n_resp]
  assert 0 < metrics["fgo_mask_density"] < 1


def test_dead_branch_tokens_get_zero_policy_gradient_through_ppo_loss(rollout_batch):
  batch, forced, tok, trainer, ppo_cfg, _ = rollout_batch
  f32 = lambda k: jnp.asarray(batch[k], jnp.float32)
  resp = f32("response_mask")
  rewards = ppo.place_rewards(f32("rewards"), resp)
  shaped = ppo.kl_penalized_rewards(
    rewards, f32("old_logprobs"), f32("ref_logprobs"), resp, ppo_cfg.kl_coef
  )
  adv, _ = ppo.gae(shaped, f32("values"), resp, ppo_cfg.gamma, ppo_cfg.lam)
  mb = {"loss_mask": resp * f32("fgo_mask"), "old_logprobs": f32("old_logprobs"), "advantages": adv}
  cfg = dataclasses.replace(ppo_cfg, entropy_coef=0.01)

  def objective(logprobs, entropy):
    return ppo.token_policy_objective(logprobs, entropy, mb, jnp.sum(resp), cfg, 0.0)[0]

  # gradient with respect to the per-token log-probs (and entropies) the policy produces
  g_lp, g_ent = jax.grad(objective, argnums=(0, 1))(f32("old_logprobs") + 0.05, jnp.ones_like(resp))
  p = batch["tokens"].shape[1] - trainer.rollout.response_len  # the batch's prompt columns
  dead, n_resp = _dead_token_columns(forced, tok, p)
  live = [c for c in range(p, p + n_resp) if c not in dead]
  g_lp, g_ent, adv = np.asarray(g_lp), np.asarray(g_ent), np.asarray(adv)
  for row in range(g_lp.shape[0]):
    assert (g_lp[row, dead] == 0).all() and (g_ent[row, dead] == 0).all()
    assert np.abs(adv[row, dead]).min() > 0  # not zero for want of an advantage
    live_nz = [c for c in live if adv[row, c] != 0]
    assert live_nz and (g_lp[row, live_nz] != 0).all() and (g_ent[row, live] != 0).all()


def test_program_that_never_reaches_its_completion_is_masked_entirely():
  """The paper's rule through rollout + pool: the prefix returns before the completion runs."""
  from stepcoder_jax.data.prompts import PromptParts
  from stepcoder_jax.models.tokenizer import tiny_tokenizer
  from stepcoder_jax.rl import rollout

  tok = tiny_tokenizer()
  eos = [tok.eos_token_id]
  prefix = "def f(x):\n    return abs(x)\n"
  head = "```python\n"
  parts = PromptParts(
    text=head + prefix,
    code_start=len(head),
    code_prefix=prefix,
    stop=("\n```",),
    truncated=False,
    style="plain",
    add_special_tokens=True,
  )
  items = [rollout.Item(problem=PROBLEM, stage=0, prompt=parts, prompt_ids=[1]) for _ in range(2)]
  rollout.fill_responses(
    items, [tok("    return -x\n```", add_special_tokens=False)["input_ids"] + eos] * 2, tok, eos
  )
  with ExecutionPool(ExecutionConfig(workers=1, coverage=True)) as pool:
    (items[0].result,) = pool.run(rollout.jobs(items[:1]))
  with ExecutionPool(ExecutionConfig(workers=1, coverage=False)) as pool:
    (items[1].result,) = pool.run(rollout.jobs(items[1:]))
  measured, unmeasured = (it.result for it in items)
  assert measured.passed and measured.coverage_state == "measured"
  assert measured.executed_lines == [] and 1 in measured.executable_lines
  assert unmeasured.passed and unmeasured.coverage_state == "none"
  arrays = rollout.pack(items, tok.pad_token_id, 8, 16)
  mask = rollout.rewards_and_masks(items, arrays, 8, fgo_enabled=True)["fgo_mask"]
  assert arrays["response_mask"][0].sum() > 0 and mask[0].sum() == 0  # ran, never reached
  np.testing.assert_array_equal(mask[1], arrays["response_mask"][1])  # nothing measured: ones
