"""A learning test that can fail: PPO raises the mean reward when the curriculum leaves one line.

Task. Four call-based problems (tests/fixtures/learning/problems.jsonl) whose canonical solutions
end with one short line, ``    return <accumulator>``, where the accumulator differs per problem
(total, count, hi, lo: one token each in the tiny vocabulary). The curriculum gives everything but
that line, so a right answer is 4 tokens and the 3-token fence; the name must come from the
problem (its question or its prefix). Four problems x 4 samples per iteration: with 8 x 2 the
per-problem contrast was too thin and the reward did not rise within 30 iterations.

Curriculum. The real `Curriculum` (registration, stages, `record`, histogram; the trainer calls it
as usual) with a plan whose latest stage starts at the last line. Real CCCS stages start only at
conditional statements, and a tail of exactly one line would need a solution ending in a one-line
compound statement, which natural programs do not have. rho / min_attempts pin every problem to
that stage for the whole run: a problem moving to s* = 0 (the question alone) would lower its
reward for a reason that is not a failure to learn.

Warm-up. A random tiny model never writes the line, so a short SFT (runs/sft.run_sft) fits the same
task first: the SFT copy of each problem has the stage prefix as starter code, so SFT prompts are
exactly the RL prompts. Full-solution SFT does not work here: its targets tokenize "\\n    return"
as "\\n   " + " return", while a CCCS prompt ends with a lone "\\n" token that SFT only saw before
the closing fence, so the SFT model closes the block at once (reward -1 everywhere). On an
8-problem version of the fixture 25 SFT steps left the samples garbage (no pass) and 60 passed
~85%. At 40 the sampled (temperature 1) policy passes about half and its mean reward over the
first 5 iterations was 0.18, -0.37 and 0.12 (seeds 0, 1, 2): reachable, and far below the
ceiling of 1.

Horizon. 16 iterations, two PPO seeds. Runs of this tiny setup dip at times after a batch where
every program passed (whitened advantages of near-equal rewards are noise at unit scale), and one
run of 48 in the seed study below collapsed for good; two runs from the same SFT policy, each
judged over its last 4 iterations, make one such run unable to fail the test alone.

Measurement. Not the sampled reward, whose noise (16 programs per iteration, a standard deviation
of about 0.25 per iteration) made the first version of this test (mean reward of the last 10 of 20
iterations minus that of the first 5, margin 0.25) a coin toss on another machine: on a 2-core AMD
EPYC VM its single seed rose 0.2325. Instead, the exact probability that the policy writes the
whole right answer (the last line and the fence) at the RL prompt, averaged over the four problems
(`answer_probability`: one forward pass, no sampling). Each run's gain is its mean over
iterations 13-16 minus the SFT policy's; the test averages the two runs' gains. Without policy
updates it is the same policy and the gain is exactly 0, on any machine: the test cannot pass when
PPO leaves the policy alone. The rollouts that drive PPO are still sampled, so the gain varies
with the machine's numerics through the trajectory; the seed study below measures that.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from learning_helpers import fgo_trainer, learning_pool
from stepcoder_jax.data.record import Problem, read_jsonl
from stepcoder_jax.rl import cccs
from stepcoder_jax.rl.config import CCCSConfig, PPOConfig, TrainConfig
from stepcoder_jax.runs.config import SFTConfig

FIXTURE = Path(__file__).parent / "fixtures" / "learning" / "problems.jsonl"
SEED = 0  # of the SFT warm-up
SEEDS = (0, 1)  # PPO seeds: two runs from the same SFT policy, their gains averaged
ITERATIONS = 16
WINDOW = 4  # each run's gain: mean p(right answer) after iterations 13-16 minus before
SAMPLES = 4  # per problem and iteration: 16 programs per rollout
SFT_STEPS = 40
EPOCHS = 2  # PPO epochs per rollout batch
POLICY_LR = 1e-3
# Seed study (scripts/learning_test_study.py, under nice; every draw depends on (seed, i) only, so
# a run's first 16 iterations are the same in a longer run). The seed is the PPO seed (the SFT
# warm-up is the same for every seed: one batch holds all four examples). Other machines' numerics
# are stood in for by a perturbation of the SFT parameters (1e-3: it sends seed 0 down the AMD
# VM's path, its first rewards matching that machine's to 0.03; 1e-6 changed no sample in 20
# iterations) and by XLA's fast math. One run's gain (mean p(right answer) over iterations 13-16
# minus before; before = 0.435, 0.447 with fast math):
#   unperturbed, seeds 0-9:           0.30, 0.17, 0.23, 0.12, 0.18, 0.16, 0.31, 0.19, -0.07, 0.21
#   SFT parameters x (1 + 1e-3 N(0, 1)), seeds 0-9:
#                                     0.09, 0.16, 0.23, 0.30, 0.09, 0.20, 0.21, 0.16, 0.17, 0.17
#   XLA_FLAGS=--xla_cpu_enable_fast_math=true, seeds 0-7:
#                                     0.28, 0.29, 0.19, 0.15, 0.17, 0.15, 0.08, 0.21
# These 28 chose the statistic (window and horizon) and the two-seed average; then a confirmation
# on seeds never looked at, fixed beforehand:
#   unperturbed, seeds 10-19:         0.16, 0.28, 0.29, 0.18, 0.11, 0.30, 0.24, 0.29, 0.25, 0.20
#   perturbed 1e-3, seeds 10-19:      0.12, 0.15, 0.30, 0.26, 0.19, 0.32, 0.22, 0.31, 0.18, 0.15
# All 48 runs: mean 0.200, standard deviation 0.077, smallest -0.07 (unperturbed seed 8, the one
# collapse), the next smallest 0.08. The test averages two runs: of the 1128 pairs of these 48
# runs, 6 are at or below MARGIN (0.5%, all with seed 8); a normal approximation gives 0.1%. So a
# machine whose numerics send seeds 0 and 1 down other paths fails this test with a probability
# of about 0.5% (the old single-run, 12-iteration statistic: about 6%, 2 of 28). Seeds 0 and 1
# give 0.24, 0.12 and 0.28 (their mean) under the three numerics. Broken learning (no policy
# update) gives exactly 0, so it never passes. Runs repeat exactly in one environment (the study
# reran seeds 0-1 to the digit), but under pytest on the same machine seed 1 left the study's path
# at iteration 5 (gain -0.02; the test's mean 0.11, a pass): paths are draws from the distribution
# above, which is what the rate assumes.
MARGIN = 0.03


class LastLineCurriculum(cccs.Curriculum):
  """CCCS with two stages per problem: all but the last line (0), then the question alone (1)."""

  def _plan(self, problem: Problem) -> cccs.Plan:
    p = self._plans.get(problem.id)
    if p is None:
      cut = last_line_start(problem.canonical_solution)
      end = len(problem.canonical_solution)
      p = self._plans[problem.id] = cccs.Plan(((cut, end),), (cut, 0))
    return p


def last_line_start(solution: str) -> int:
  """Char offset of the start of the solution's last non-empty line."""
  return solution.rstrip("\n").rfind("\n") + 1


def staged(problem: Problem) -> Problem:
  """The SFT copy of `problem`: its starter code is the stage prefix, so the SFT prompt is the RL
  prompt and the SFT target is the last line and the fence."""
  solution = problem.canonical_solution
  return dataclasses.replace(problem, starter_code=solution[: last_line_start(solution)])


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
  return read_jsonl(str(FIXTURE))


@pytest.fixture(scope="module")
def warm_params(problems):
  """(cfg, tokenizer, SFT params) of the test's seed (the SFT run is deterministic)."""
  return warm_up(problems, SEED)


def warm_up(problems, seed: int, perturb: float = 0.0):
  """(cfg, tokenizer, params) after the SFT warm-up; `perturb` > 0 multiplies every parameter by
  (1 + perturb x N(0, 1)): a stand-in for another machine's rounding (the seed study)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from stepcoder_jax.models.loading import load_model
  from stepcoder_jax.runs import sft

  cfg, model, tok = load_model("tiny-llama")
  sft.run_sft(
    model,
    tok,
    [staged(p) for p in problems],
    SFTConfig(
      steps=SFT_STEPS,
      batch_size=8,
      learning_rate=3e-3,
      warmup_steps=0,
      seed=seed,
      nll_examples=0,
      logprob_chunk=64,
      cccs_stages=False,
    ),
    None,
    progress=False,
  )
  state = nnx.state(model)
  if perturb:
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1000), len(leaves))
    leaves = [
      x * (1 + perturb * jax.random.normal(k, x.shape, x.dtype))
      if jnp.issubdtype(x.dtype, jnp.floating)
      else x
      for x, k in zip(leaves, keys)
    ]
    state = jax.tree.unflatten(treedef, leaves)
  return cfg, tok, state


def train(
  problems, warm_params, work_dir: Path, policy_lr: float, seed: int = SEED, on_iteration=None
):
  """(per-iteration mean rewards, the final policy) of a PPO run from the SFT policy;
  `on_iteration(trainer, metrics)` is called after every iteration (the seed study)."""
  from flax import nnx

  from stepcoder_jax.models.decoder import Decoder
  from stepcoder_jax.runs.trainer import Models

  cfg, tok, state = warm_params
  model = Decoder(cfg, nnx.Rngs(0))
  nnx.update(model, jax_copy(state))  # a fresh copy: the PPO step donates its inputs
  train_cfg = TrainConfig(
    work_dir=str(work_dir),
    seed=seed,
    num_iterations=ITERATIONS,
    problems_per_iteration=len(problems),
    samples_per_problem=SAMPLES,
    max_prompt_tokens=256,
    max_new_tokens=8,
    temperature=1.0,
    logprob_chunk=64,
  )
  # lam = 1: every token of a 7-token answer gets the whole return (R - V), not a share decayed
  # from the last token; the KL penalty keeps the policy near the SFT policy it starts from.
  ppo_cfg = PPOConfig(
    policy_lr=policy_lr,
    value_lr=1e-3,
    kl_coef=0.05,
    lam=1.0,
    epochs=EPOCHS,
    minibatches=2,
    seed=seed,
  )
  # Pinned at the last-line stage for the whole run (see the module docstring).
  cccs_cfg = CCCSConfig(enabled=True, rho=0.99, min_attempts=10**6)
  with learning_pool() as pool:
    trainer = fgo_trainer(
      Models(cfg, model, tok),
      problems,
      pool,
      train_cfg,
      ppo_cfg,
      cccs_cfg,
      curriculum=LastLineCurriculum(cccs_cfg),
    )
    history = trainer.run(on_iteration)
  assert trainer.curriculum.histogram() == {"stage_0": len(problems), "final": 0}  # stayed
  assert all(h["prompts_skipped"] == 0 for h in history)
  return [h["reward_mean"] for h in history], trainer.policy_model()


def jax_copy(tree):
  import jax
  import jax.numpy as jnp

  return jax.tree.map(jnp.copy, tree)  # jnp.copy: new buffers, safe to donate


def answer_probability(model, tok, problems) -> float:
  """Mean over the problems of the policy's probability of the whole right answer (the last line
  and the fence) at the RL prompt (the SFT example of the staged problem: the same prompt)."""
  import jax.numpy as jnp

  from stepcoder_jax.rl.ppo import policy_logprobs
  from stepcoder_jax.runs import sft

  examples, _ = sft.build_examples([staged(p) for p in problems], tok, max_len=10**6)
  assert len(examples) == len(problems)
  shapes = sft.example_shapes(examples)
  batch = sft.pack_examples(examples, tok.pad_token_id or 0, *shapes)
  logp = policy_logprobs(
    model,
    jnp.asarray(batch["tokens"]),
    jnp.asarray(batch["positions"]),
    jnp.asarray(batch["attention_mask"]),
    chunk=64,
    with_entropy=False,
    response_start=shapes[0],
  )
  seq = np.sum(np.asarray(logp) * np.asarray(batch["response_mask"]), axis=1)
  return float(np.mean(np.exp(seq)))


def sft_policy(warm_params):
  from flax import nnx

  from stepcoder_jax.models.decoder import Decoder

  cfg, _, state = warm_params
  model = Decoder(cfg, nnx.Rngs(0))
  nnx.update(model, jax_copy(state))
  return model


def test_fixture_tasks_leave_one_short_line(problems):
  cur = LastLineCurriculum(CCCSConfig(enabled=True))
  for p in problems:
    tail = p.canonical_solution[len(cur.prefix(p)) :]
    assert tail.count("\n") == 1 and tail.startswith("    return ") and len(tail) <= 24, p.id
    assert cur.stage(p) == 0
  assert len({p.canonical_solution.split()[-1] for p in problems}) == len(problems)


def learning_gain(probs: list[float]) -> float:
  """One run's gain: the mean p(right answer) over the last WINDOW iterations minus the SFT
  policy's (`probs[i]` = after i iterations; probs[0] = before)."""
  assert len(probs) == ITERATIONS + 1
  return float(np.mean(probs[-WINDOW:]) - probs[0])


@pytest.mark.slow
def test_ppo_raises_the_probability_of_the_right_answer(problems, warm_params, tmp_path):
  tok = warm_params[1]
  before = answer_probability(sft_policy(warm_params), tok, problems)
  assert before < 0.6, f"the warm-up already solves the task: p = {before:.3f}"
  gains = []
  for seed in SEEDS:
    probs = [before]

    def record(trainer, _, probs=probs):
      probs.append(answer_probability(trainer.policy_model(), tok, problems))

    rewards, _ = train(problems, warm_params, tmp_path / f"seed{seed}", POLICY_LR, seed, record)
    gains.append(learning_gain(probs))
    print(f"seed {seed}: rewards", np.round(rewards, 2), "p(right answer)", np.round(probs, 3))
  gain = float(np.mean(gains))
  assert gain > MARGIN, f"p(right answer) gain {gain:.3f} (per seed {np.round(gains, 3)})"
