"""`train` resumes only with the settings that shaped the run (runs/train_settings.py).

One tiny run of one iteration, then, on its work dir: a resume with another `ppo.kl_coef` stops
with one line naming that binding (exit 2, before anything compiles; a changed iteration count
is not named: it shapes no step already taken); the same resume with --allow_changed_settings
trains on with the new coefficient, and the operative config keeps both segments' values. Then
the fingerprint's rules and the operative config's segments on their own (cheap).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMALL = [
  "--gin_file=experiments/tiny_cpu.gin",
  "--gin.execution.workers=2",
  "--gin.train.eval_every=0",
  "--gin.train.problems_per_iteration=2",
  "--gin.train.max_new_tokens=8",
  "--gin.ppo.minibatches=1",
]


def _train(tmp_path, work, *extra):
  env = dict(os.environ, STEPCODER_JAX_CACHE=str(tmp_path / "cache"))
  return subprocess.run(
    [
      sys.executable,
      "-m",
      "stepcoder_jax",
      "train",
      *SMALL,
      f"--work_dir={work}",
      f"--data_dir={tmp_path / 'tfds'}",
      *extra,
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


@pytest.mark.slow
def test_resume_with_changed_ppo_setting_is_refused_unless_allowed(tmp_path):
  work = tmp_path / "run"
  p = _train(tmp_path, work, "--iterations=1")
  assert p.returncode == 0, p.stderr[-3000:]

  p = _train(tmp_path, work, "--iterations=2", "--gin.ppo.kl_coef=0.5")
  assert p.returncode == 2, p.stderr[-3000:]
  errors = [l for l in p.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "ppo.kl_coef 0.05 -> 0.5" in errors[0], p.stderr[-3000:]
  assert "--allow_changed_settings" in errors[0] and "num_iterations" not in errors[0]
  assert "Traceback" not in p.stderr and "compiling" not in p.stderr
  assert "ppo.kl_coef = 0.05" in (work / "operative_config.gin").read_text()  # not overwritten

  p = _train(tmp_path, work, "--iterations=2", "--gin.ppo.kl_coef=0.5", "--allow_changed_settings")
  assert p.returncode == 0, p.stderr[-3000:]
  assert "continuing with changed settings" in p.stderr and "ppo.kl_coef" in p.stderr
  rows = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2]
  assert rows[0]["ppo/kl_coef"] == pytest.approx(0.05) and rows[1]["ppo/kl_coef"] == 0.5
  operative = (work / "operative_config.gin").read_text()
  first, second = operative.split("# ---- resumed at iteration 1 with changed settings")
  assert "ppo.kl_coef = 0.05" in first and "ppo.kl_coef = 0.5" in second
  assert "ppo.kl_coef" in second.splitlines()[0]  # the segment names what changed


def test_fingerprint_ignores_what_shapes_no_step_taken_and_names_what_does(tmp_path):
  from types import SimpleNamespace

  from stepcoder_jax.errors import UserError
  from stepcoder_jax.models.config import ModelConfig
  from stepcoder_jax.rl.config import CCCSConfig, FGOConfig, PPOConfig, TrainConfig
  from stepcoder_jax.runs import train_settings as ts

  problems = [SimpleNamespace(id="a")]  # only the ids count

  def fp(train, ppo=None, model=None, ps=problems):
    return ts.fingerprint(
      train=train,
      ppo=ppo or PPOConfig(),
      cccs=CCCSConfig(),
      fgo=FGOConfig(),
      model=model or ModelConfig(),
      problems=ps,
    )

  saved = fp(TrainConfig(num_iterations=3, eval_every=1, work_dir="a", max_prompt_tokens=64))
  same = fp(
    TrainConfig(
      num_iterations=9, eval_every=0, work_dir="b", max_prompt_tokens=64, logprob_chunk=16
    ),
    model=ModelConfig(remat=True),
  )
  assert ts.check(saved, same, tmp_path, allow=False) == []
  other = fp(
    TrainConfig(seed=1, max_prompt_tokens=64),
    ppo=PPOConfig(kl_coef=0.5),
    ps=problems + [SimpleNamespace(id="b")],
  )
  with pytest.raises(UserError, match=r"ppo\.kl_coef 0\.05 -> 0\.5, problems .*train\.seed 0"):
    ts.check(saved, other, tmp_path, allow=False)
  assert ts.check(saved, other, tmp_path, allow=True) == ["ppo.kl_coef", "problems", "train.seed"]
  assert ts.check(None, other, tmp_path, allow=False) == []  # a checkpoint from before


def test_operative_config_keeps_each_segment(tmp_path):
  from stepcoder_jax.runs import train_settings as ts

  path = tmp_path / ts.OPERATIVE
  ts.record_operative(tmp_path, "a = 1\n", None)
  ts.record_operative(tmp_path, "a = 1\n", 3)  # resumed, nothing changed: nothing added
  assert path.read_text() == "a = 1\n"
  ts.record_operative(tmp_path, "a = 2\n", 3, ["a"])
  ts.record_operative(tmp_path, "a = 2\n", 5)
  text = path.read_text()
  assert text.startswith("a = 1\n") and text.count("# ---- resumed at iteration") == 1
  assert "resumed at iteration 3 with changed settings (--allow_changed_settings): a" in text
  assert text.endswith("a = 2\n")
  ts.record_operative(tmp_path, "b = 1\n", None)  # a fresh run starts the record over
  assert path.read_text() == "b = 1\n"
