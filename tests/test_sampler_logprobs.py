"""Old log-probs from the sampler (`train.sampler_logprobs`): the sampler's log-prob of each drawn
token equals the full forward's, and the rollout then runs one scoring forward fewer."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stepcoder_jax import sampling
from stepcoder_jax.models.config import SamplingConfig
from stepcoder_jax.models.loading import load_model
from stepcoder_jax.rl import batching, ppo

FLAGS = [{}, {"remat": True, "scan_layers": True}]


def _tiny(**flags):
  cfg, model, tok = load_model("tiny-llama")
  model.cfg = dataclasses.replace(cfg, **flags)
  return model, tok


@pytest.mark.parametrize("flags", FLAGS, ids=["loop", "remat_scan"])
def test_sampler_logprobs_equal_the_full_forward(flags):
  model, tok = _tiny(**flags)
  prompts = [
    tok("def add(a, b):\n")["input_ids"],
    tok("x = 1\n")["input_ids"],
    tok("for i in range(3):\n    print(i)\n")["input_ids"],
  ]
  n = 24
  cfg = SamplingConfig(temperature=1.0, max_new_tokens=n, min_prompt_bucket=16)
  out = sampling.generate_ids(model, prompts, cfg, jax.random.key(3), eos_ids=(), pad_id=0)
  assert out.logprobs.dtype == np.float32 and out.lengths.tolist() == [n] * 3
  p = sampling.bucket(max(map(len, prompts)), cfg.min_prompt_bucket)
  arr = batching.pack(prompts, [list(r) for r in out.tokens], 0, prompt_len=p, response_len=32)
  logp = ppo.policy_logprobs(
    model,
    jnp.asarray(arr["tokens"]),
    jnp.asarray(arr["positions"]),
    jnp.asarray(arr["attention_mask"]),
    chunk=8,
    with_entropy=False,
    response_start=p,
  )
  diff = np.abs(np.asarray(logp)[:, p : p + n] - out.logprobs)
  print(f"max |sampler - forward| log-prob difference ({flags or 'loop'}): {diff.max():.2e}")
  assert diff.max() < 1e-5
  assert np.all(out.logprobs < 0)  # real log-probs, not the zero filler


def test_sampler_logprobs_are_zero_past_each_rows_end():
  model, tok = _tiny()
  eos = tok.eos_token_id
  cfg = SamplingConfig(temperature=1.0, max_new_tokens=64)
  out = sampling.generate_ids(
    model, [[5, 6, 7]] * 8, cfg, jax.random.key(0), eos_ids=(eos,), pad_id=0
  )
  short = out.lengths < 64
  assert short.any(), "no row drew EOS within 64 tokens: pick another seed"
  for row, n in zip(out.logprobs, out.lengths):
    assert np.all(row[n:] == 0.0) and np.all(row[:n] < 0)


def _collect(sampler_logprobs: bool, flags: dict, calls: list):
  """One rollout of two bundled problems x 2 samples (GAE: old, reference and value forwards)."""
  from learning_helpers import fgo_trainer, learning_pool

  from stepcoder_jax.data.builders.stepcoder_builtin import read_builtin
  from stepcoder_jax.rl.config import CCCSConfig, PPOConfig, TrainConfig
  from stepcoder_jax.runs.trainer import Models

  model, tok = _tiny(**flags)
  problems = [p for p in read_builtin() if p.test_kind == "call"][:2]
  cfg = TrainConfig(
    work_dir="run",
    problems_per_iteration=2,
    samples_per_problem=2,
    max_prompt_tokens=256,
    max_new_tokens=16,
    logprob_chunk=16,
    sampler_logprobs=sampler_logprobs,
  )
  with learning_pool() as pool:
    trainer = fgo_trainer(
      Models(model.cfg, model, tok),
      problems,
      pool,
      cfg,
      PPOConfig(minibatches=1),
      CCCSConfig(enabled=False),
    )
    before = len(calls)
    batch, _ = trainer.rollout.collect(trainer.state, problems, jax.random.PRNGKey(7))
    traced = len(calls) - before
  return jax.device_get(batch), traced


@pytest.mark.parametrize("flags", FLAGS, ids=["loop", "remat_scan"])
def test_rollout_takes_old_logprobs_from_the_sampler_with_one_forward_fewer(
  flags, monkeypatch, tmp_path
):
  calls = []
  real = ppo.policy_logprobs

  def counted(*a, **k):  # the real scoring forward; counts how many the traced rollout holds
    calls.append(1)
    return real(*a, **k)

  monkeypatch.setattr(ppo, "policy_logprobs", counted)
  monkeypatch.chdir(tmp_path)
  on, forwards_on = _collect(True, flags, calls)
  off, forwards_off = _collect(False, flags, calls)
  assert (forwards_on, forwards_off) == (1, 2)  # reference only / old + reference
  np.testing.assert_array_equal(on.tokens, off.tokens)  # same rng, same policy: same samples
  np.testing.assert_array_equal(on.ref_logprobs, off.ref_logprobs)
  resp = np.asarray(on.response_mask) > 0
  assert resp.sum() > 8
  diff = np.abs(np.asarray(on.old_logprobs) - np.asarray(off.old_logprobs))
  print(f"rollout old log-probs, sampler vs forward ({flags or 'loop'}): max {diff.max():.2e}")
  assert diff.max() < 1e-5
  assert np.all(np.asarray(on.old_logprobs)[resp] < 0)
  assert np.all(np.asarray(on.old_logprobs)[~resp] == 0)
