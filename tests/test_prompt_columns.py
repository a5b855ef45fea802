"""A batch's prompt columns follow its longest prompt (`train.prompt_bucket`), not the limit's
bucket, and that changes no result: the same draws, rewards and PPO step as the fixed width.

Real pieces: the tiny Llama policy, its real sampler, the execution pool and the jitted steps of
the Trainer's iteration; two GRPO iterations from the same weights and seed, one per width.
"""

import dataclasses

import pytest

from stepcoder_jax.config import CheckpointConfig, MeshConfig
from stepcoder_jax.data.record import Problem
from stepcoder_jax.execution import ExecutionConfig, ExecutionPool
from stepcoder_jax.rl.config import CCCSConfig, FGOConfig, PPOConfig, TrainConfig

PROBLEMS = [
  Problem(
    id=f"t/{k}",
    question=f"Return x plus {k}.",
    test_kind="call",
    fn_name="f",
    inputs=[[1], [2]],
    outputs=[1 + k, 2 + k],
  )
  for k in range(2)
]


def _iterate(bucket: int, tmp_path):
  from stepcoder_jax.models.loading import load_model
  from stepcoder_jax.runs.trainer import Models, Trainer

  cfg, model, tok = load_model("tiny-llama")
  train_cfg = TrainConfig(
    work_dir=str(tmp_path / f"run{bucket}"),
    problems_per_iteration=2,
    samples_per_problem=2,
    max_prompt_tokens=256,
    max_new_tokens=16,
    logprob_chunk=16,
    prompt_bucket=bucket,
  )
  ppo_cfg = PPOConfig(advantage="grpo", minibatches=1, policy_lr=1e-3, kl_coef=0.05)
  with ExecutionPool(ExecutionConfig(workers=1)) as pool:
    trainer = Trainer(
      Models(cfg, model, tok),
      PROBLEMS,
      cfg=train_cfg,
      ppo_cfg=ppo_cfg,
      cccs_cfg=CCCSConfig(enabled=False),
      fgo_cfg=FGOConfig(enabled=False),
      mesh_cfg=MeshConfig(),
      ckpt_cfg=CheckpointConfig(),
      pool=pool,
    )
    seen = []
    collect = trainer.rollout.collect

    def recording(*a, **k):
      batch, rows = collect(*a, **k)
      seen.append((rows.prompt_len, [list(it.response_ids) for it in rows.items]))
      return batch, rows

    trainer.rollout.collect = recording
    metrics = trainer.iterate()
  return trainer, seen[0], metrics


def test_short_prompts_get_fewer_columns_and_the_same_iteration(tmp_path):
  fixed, (p_fixed, drawn_fixed), m_fixed = _iterate(0, tmp_path)
  _, (p_short, drawn_short), m_short = _iterate(16, tmp_path)
  assert p_fixed == fixed.prompt_len == 256
  assert p_short < p_fixed and p_short % 16 == 0  # the prompts here are ~60 tokens
  assert drawn_short == drawn_fixed  # the same tokens drawn
  for k in ("reward_mean", "pass_rate", "ppo/policy_loss", "ppo/entropy", "ppo/policy_grad_norm"):
    assert m_short[k] == pytest.approx(m_fixed[k], rel=1e-4, abs=1e-6), k


def test_prompt_bucket_must_not_be_negative(tmp_path):
  from stepcoder_jax.errors import UserError
  from stepcoder_jax.runs.trainer import _check_config

  cfg = dataclasses.replace(TrainConfig(samples_per_problem=2), prompt_bucket=-1)
  with pytest.raises(UserError, match="prompt_bucket must be >= 0"):
    _check_config(cfg, PPOConfig(advantage="grpo"))
