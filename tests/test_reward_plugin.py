"""The reward plug-in (gin `reward.fn`, or `reward=` of the Python API): it receives the problem,
the completion and the judge's per-test verdicts, and its value is the reward PPO trains on."""

from __future__ import annotations

import gin
import pytest

from stepcoder_jax import gin_setup
from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError
from stepcoder_jax.execution import ExecutionPool, Job
from stepcoder_jax.execution.config import ExecutionConfig, RewardConfig

CLAMP = Problem(
  id="mine/clamp",
  question="Write clamp(x, lo, hi).",
  test_kind="call",
  fn_name="clamp",
  inputs=[[5, 0, 10], [-3, 0, 10], [12, 0, 10]],
  outputs=[5, 0, 10],
  canonical_solution="def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n"
  "    if x > hi:\n        return hi\n    return x\n",
)
HALF = "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    return x\n"  # 2 of 3 pass


@gin.register
def share_of_tests(problem, completion, result) -> float:
  """Partial credit: the share of unit tests passed (a plug-in as a user would write one)."""
  del problem, completion
  return result.test_verdicts.count("pass") / len(result.test_verdicts)


def _judge(reward_cfg, *completions):
  with ExecutionPool(ExecutionConfig(workers=1), reward_cfg) as pool:
    return pool.run([Job(CLAMP, c) for c in completions])


def test_plugin_gets_per_test_verdicts_and_sets_the_reward():
  seen = []

  def reward(problem, completion, result):
    seen.append((problem.id, completion, list(result.test_verdicts), result.reward))
    return share_of_tests(problem, completion, result)

  full, half, broken = _judge(RewardConfig(fn=reward), CLAMP.canonical_solution, HALF, "def (")
  assert [r.reward for r in (full, half, broken)] == [1.0, pytest.approx(2 / 3), 0.0]
  assert seen[1] == ("mine/clamp", HALF, ["pass", "pass", "fail"], -0.3)  # CodeRL value given
  assert seen[2][2] == ["not_run"] * 3 and broken.outcome == "compile_error"
  # Without a plug-in: CodeRL's reward of each outcome.
  assert [r.reward for r in _judge(RewardConfig(), CLAMP.canonical_solution, HALF)] == [1.0, -0.3]


def test_plugin_returning_no_number_is_a_one_line_error():
  with pytest.raises(UserError, match=r"reward.fn .*returned 'high' for problem 'mine/clamp'"):
    _judge(RewardConfig(fn=lambda *a: "high"), HALF)


def test_plugin_is_bound_by_name_in_gin():
  gin_setup.parse([], ["reward.fn = @share_of_tests"])
  rewards = [r.reward for r in _judge(RewardConfig(), CLAMP.canonical_solution, HALF)]
  assert rewards == [1.0, pytest.approx(2 / 3)]


@pytest.mark.slow
def test_api_train_trains_on_the_plugin_reward(tmp_path):
  import stepcoder_jax as scj

  calls = []

  def constant(problem, completion, result):
    calls.append((problem, completion, result))
    return 0.25

  run = scj.train(
    "tiny-llama",
    [CLAMP],
    tmp_path / "rl",
    iterations=1,
    reward=constant,
    gin_files=["experiments/tiny_cpu.gin"],
    gin={"train.eval_every": 0, "execution.workers": 1},
  )
  assert len(run.history) == 1 and run.history[0]["reward_mean"] == 0.25
  assert 0.0 < run.history[0]["fgo_mask_density"] <= 1.0  # FGO still masks from coverage
  assert calls  # every judged rollout row went through the plug-in
  for problem, completion, result in calls:
    assert problem.id == "mine/clamp" and isinstance(completion, str)
    assert len(result.test_verdicts) == result.tests_total == 3
  assert (run.model_dir / "config.json").is_file()
  out = scj.export(run.model_dir, tmp_path / "exported")  # the API's way through a command
  assert "**Base model**: tiny-llama" in (out / "README.md").read_text()


def test_api_judge_takes_records_and_a_plugin():
  import stepcoder_jax as scj

  results = scj.judge(
    [CLAMP.to_dict()],
    [("mine/clamp", HALF), ("mine/clamp", "x = (")],
    reward=share_of_tests,
    gin={"execution.workers": 1},
  )
  assert [r.outcome for r in results] == ["failed", "compile_error"]
  assert [r.reward for r in results] == [pytest.approx(2 / 3), 0.0]
  with pytest.raises(UserError, match="'nope', which is not among the problems"):
    scj.judge([CLAMP], {"nope": "pass"})
