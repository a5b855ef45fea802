"""End-to-end StepCoder training on CPU with the tiny config: artifacts, and kill-and-resume.

What the resume test compares: a run killed with SIGKILL while it trains (after its second
iteration was logged, so the kill lands inside the third iteration or its checkpoint write) and then
restarted on the same work dir must end with exactly the same policy and value parameters,
optimizer states and curriculum state as an uninterrupted run with the same seed, and log the same
metrics for the last iteration.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--gin_file=experiments/tiny_cpu.gin"]
# The critic-free arm on the same 4 rollout rows (2 problems x a group of 2). The entropy bonus
# moves the tiny random policy even though every program it writes fails alike (equal rewards give
# GRPO nothing); the KL that follows separates the samples of a group, so later steps update.
GRPO = [
  "--gin_file=ablations/grpo_stepcoder.gin",
  "--gin.train.samples_per_problem=2",
  "--gin.train.problems_per_iteration=2",
  "--gin.ppo.entropy_coef=0.01",
]


def _train_cmd(work_dir, *extra):
  return [
    sys.executable,
    "-m",
    "stepcoder_jax",
    "train",
    *TINY,
    f"--work_dir={work_dir}",
    "--gin.execution.workers=2",
    *extra,
  ]


def _env(tmp_path):
  env = dict(os.environ)
  env["STEPCODER_JAX_CACHE"] = str(tmp_path / "cache")
  env.setdefault("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
  return env


def _metrics(work_dir):
  p = Path(work_dir) / "metrics.jsonl"
  if not p.exists():
    return []
  return [json.loads(l) for l in p.read_text().splitlines() if l.strip()]


def _final_state(work_dir):
  """Every array of the latest checkpoint, plus its metadata, read back with orbax."""
  from stepcoder_jax import checkpoint as ck

  c = ck.Checkpointer(ck.checkpoint_dir(work_dir), ck.CheckpointConfig(async_save=False))
  try:
    trees, meta = c.restore()
  finally:
    c.close()
  import jax

  flat = {
    jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(trees)
  }
  return flat, meta


@pytest.mark.slow
def test_tiny_cpu_run_leaves_all_artifacts(tmp_path):
  work = tmp_path / "run"
  p = subprocess.run(
    _train_cmd(work, "--iterations=2"),
    cwd=ROOT,
    env=_env(tmp_path),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert p.returncode == 0, p.stderr[-3000:]
  rows = _metrics(work)
  assert [r["step"] for r in rows] == [1, 2]
  for key in ("reward_mean", "pass_rate", "fgo_mask_density", "ppo/policy_loss"):
    assert key in rows[-1], sorted(rows[-1])
  assert -1.0 <= rows[-1]["reward_mean"] <= 1.0
  for r in rows:  # the pass rate at s* = 0 exists exactly when some row was at s* = 0
    assert ("pass_rate_final" in r) == (r["rows_final"] > 0), r
    assert 0.0 <= r.get("pass_rate_final", 0.0) <= 1.0
  assert list((work / "tensorboard").glob("events.out.tfevents.*"))
  assert (work / "operative_config.gin").read_text().count("train.") > 3
  assert (work / "checkpoints" / "2").is_dir()
  assert (work / "training_curves.png").stat().st_size > 1000
  assert "pass@1" in (work / "eval" / "step2.md").read_text()  # the end-of-run eval table
  assert "eval/all/pass@1" in rows[-1], sorted(rows[-1])


@pytest.mark.slow
@pytest.mark.parametrize("arm", [[], GRPO], ids=["gae", "grpo"])
def test_sigkill_mid_run_resumes_to_the_same_state(tmp_path, arm):
  env = _env(tmp_path)
  ref = tmp_path / "uninterrupted"
  p = subprocess.run(
    _train_cmd(ref, *arm), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
  )
  assert p.returncode == 0, p.stderr[-3000:]

  killed = tmp_path / "killed"
  proc = subprocess.Popen(
    _train_cmd(killed, *arm),
    cwd=ROOT,
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
    start_new_session=True,
  )
  deadline = time.time() + 600
  while len(_metrics(killed)) < 2 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert proc.poll() is None, "the run ended before it could be killed"
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  assert len(_metrics(killed)) == 2  # killed during the third (last) iteration

  p = subprocess.run(
    _train_cmd(killed, *arm), cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
  )
  assert p.returncode == 0, p.stderr[-3000:]
  assert "resumed from" in p.stderr

  a, meta_a = _final_state(ref)
  b, meta_b = _final_state(killed)
  assert meta_a["iteration"] == meta_b["iteration"] == 3
  assert meta_a["curriculum"] == meta_b["curriculum"]
  assert sorted(a) == sorted(b)
  # GAE checkpoints a value model and its optimizer; the critic-free arm has none to save.
  assert any(k.startswith("['value']") for k in a) == (not arm)
  assert any(k.startswith("['value_opt']") for k in a) == (not arm)
  assert max(r["ppo/policy_grad_norm"] for r in _metrics(ref)) > 1e-3  # the policy trained
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  assert [r["step"] for r in _metrics(killed)] == [1, 2, 3]  # one row per iteration
  last_a, last_b = _metrics(ref)[-1], _metrics(killed)[-1]
  for k, v in last_a.items():
    if not k.startswith("time"):
      assert last_b[k] == v, k
