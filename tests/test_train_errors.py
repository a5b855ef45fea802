"""`train` rejects a configuration that cannot run with one line and exit 2, before compiling."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--dataset=nope"], "unknown dataset 'nope'"),
    (["--gin.no_such.thing=1"], "no_such"),
    (["--gin.train.problems_per_iteration=3"], "3 rows is not divisible by ppo.minibatches"),
    (["--gin.prompt.max_tokens=16"], "longer than prompt.max_tokens=16"),
    (["--gin.train.max_prompt_tokens=16"], "the prompt limit is prompt.max_tokens"),
    # PPO scores log-probs at temperature 1 without top-k/top-p (issue 10.7)
    (["--gin.train.temperature=0.7"], "gin train.temperature: 0.7 is not supported"),
    (["--gin.train.top_p=0.9"], "gin train.top_p: 0.9 is not supported"),
    (["--gin.train.top_k=40"], "gin train.top_k: 40 is not supported"),
    # FGO masks come from coverage: without it they would silently be ones (issue 10.5)
    (["--gin.execution.coverage=False"], "fgo.enabled = True needs execution.coverage = True"),
    # Reward-signal options (issue 28)
    (["--gin.cccs.schedule='bread'"], "gin cccs.schedule: 'bread' is not 'paper' or 'adaptive'"),
    (["--gin.ppo.filter_groups=True"], "gin ppo.filter_groups: True needs a group estimator"),
    (
      [
        "--gin.ppo.filter_groups=True",
        "--gin.ppo.advantage='grpo'",
        "--gin.train.samples_per_problem=1",
      ],
      "needs train.samples_per_problem >= 2 (it is 1",
    ),
  ],
)
def test_bad_training_configuration_is_one_line_exit_2(tmp_path, flags, message):
  env = dict(os.environ, STEPCODER_JAX_CACHE=str(tmp_path / "cache"))
  p = subprocess.run(
    [
      sys.executable,
      "-m",
      "stepcoder_jax",
      "train",
      "--gin_file=experiments/tiny_cpu.gin",
      f"--work_dir={tmp_path / 'run'}",
      f"--data_dir={tmp_path / 'tfds'}",
      *flags,
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert p.returncode == 2, p.stderr[-2000:]
  errors = [l for l in p.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and message in errors[0], p.stderr[-2000:]
  assert "compiling" not in p.stderr  # the sampler/step never compiled
  assert "Traceback" not in p.stderr
