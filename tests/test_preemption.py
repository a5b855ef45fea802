"""A run stopped by SIGTERM / SIGINT (stepcoder_jax/preemption.py) finishes its iteration, saves,
exits 0 with one line, and a rerun resumes to exactly the state of an uninterrupted run: single-
process `train`, `sft`, and `train` on a 2-process local pod whose processes are signalled at
different points of the same iteration. Plus: a second signal, an interrupted save, and
launch/local_pod.sh passing a signal on.

The signals are real (sent through the kernel), at chosen calls (tests/preemption_helpers.py)
rather than after a delay, so the iteration each one falls in never depends on machine load. The
comparison with the uninterrupted run is the kill-and-resume test's (tests/test_trainer.py): every
array of the final checkpoint, its curriculum, and the last metrics row, exactly.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import preemption_helpers as plan
from stepcoder_jax import cli, preemption
from test_trainer import _final_state, _metrics

ROOT = Path(__file__).resolve().parent.parent
HELPERS = Path(__file__).resolve().parent / "preemption_helpers.py"
# No periodic checkpoints: the only one before the end is the one the stop writes.
TRAIN = [
  "train",
  "--gin_file=experiments/tiny_cpu.gin",
  "--iterations=2",
  "--gin.train.eval_every=0",
  "--gin.execution.workers=1",
  "--gin.checkpoint.save_interval_steps=100",
]


def _env(tmp_path, **extra):
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    # The runs of a test compile the same programs: the first one's XLA executables
    # serve the others (the same code, so the same results; only faster).
    JAX_COMPILATION_CACHE_DIR=str(tmp_path / "xla_cache"),
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    **extra,
  )
  env.setdefault("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
  return env


def _assert_same_final_state(ref: Path, resumed: Path, iterations: int) -> None:
  a, meta_a = _final_state(ref)
  b, meta_b = _final_state(resumed)
  assert meta_a["iteration"] == meta_b["iteration"] == iterations
  assert meta_a["curriculum"] == meta_b["curriculum"]
  assert sorted(a) == sorted(b)
  assert max(r["ppo/policy_grad_norm"] for r in _metrics(ref)) > 1e-3  # the policy trained
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  rows_a, rows_b = _metrics(ref), _metrics(resumed)
  assert [r["step"] for r in rows_b] == list(range(1, iterations + 1))  # one row per iteration
  for k, v in rows_a[-1].items():
    if not k.startswith("time"):
      assert rows_b[-1][k] == v, k


# ---------------------------------------------------------------------------------------------
# single process


@pytest.mark.slow
def test_train_stopped_mid_iteration_saves_exits_0_and_resumes_exactly(tmp_path):
  env = _env(tmp_path)
  ref, stopped = tmp_path / "uninterrupted", tmp_path / "stopped"

  def train(work, *entry, **kw):
    argv = [sys.executable, *(entry or ["-m", "stepcoder_jax"]), *TRAIN, f"--work_dir={work}"]
    p = subprocess.run(
      argv, cwd=ROOT, capture_output=True, text=True, timeout=900, env=dict(env, **kw)
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return p

  train(ref)
  # SIGTERM while iteration 1 is being judged; SIGINT during the save that follows (a second
  # signal must let the save finish).
  p = train(
    stopped,
    str(HELPERS),
    PREEMPT_PLAN=json.dumps({"0": [[plan.SUBMIT, 1, "SIGTERM"], [plan.SAVE, 1, "SIGINT"]]}),
  )
  line = p.stdout.strip().splitlines()[-1]
  assert line.startswith(
    f"stopped by SIGTERM after iteration 1: saved {stopped}/checkpoints/1; "
    "to resume, run the same command: "
  ), line
  assert shlex.split(line.split("run the same command: ", 1)[1])[-1] == f"--work_dir={stopped}"
  assert "SIGINT received during the save: finishing the save first" in p.stderr
  assert [r["step"] for r in _metrics(stopped)] == [1]  # the metrics of iteration 1 flushed
  _, meta = _final_state(stopped)
  assert meta["iteration"] == 1 and meta["curriculum"]  # a complete step, curriculum included
  assert preemption.read_marker(stopped)["saved"] == f"{stopped}/checkpoints/1"

  p = train(stopped)
  assert "resumed from" in p.stderr and "at iteration 1" in p.stderr
  assert preemption.read_marker(stopped) is None  # the run went on and finished
  _assert_same_final_state(ref, stopped, 2)


@pytest.mark.slow
def test_sft_stopped_mid_run_saves_exits_0_and_resumes_exactly(
  tmp_path, monkeypatch, capsys, caplog
):
  from test_sft_early_stop import _split

  problems = tmp_path / "train.jsonl"
  problems.write_text("".join(p.to_json() + "\n" for p in _split()[0]))

  def sft(out):
    return cli.main(
      [
        "sft",
        "--model",
        "tiny-llama",
        "--problems",
        str(problems),
        "--out",
        str(out),
        "--steps",
        "8",
        "--gin.sft.batch_size=2",
        "--gin.sft.learning_rate=0.01",
        "--gin.sft.warmup_steps=0",
        "--gin.sft.cccs_stages=False",
        "--gin.sft.save_every=100",
        "--gin.sft.nll_examples=0",
      ]
    )

  stopped, ref = tmp_path / "stopped", tmp_path / "plain"
  with monkeypatch.context() as m:  # SIGINT while step 3's metrics are written
    plan.install([[plan.WRITE, 3, "SIGINT"]], m.setattr)
    assert sft(stopped) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert len(out) == 1 and out[0].startswith(
    f"stopped by SIGINT after step 3: saved {stopped}/checkpoints/3; to resume, "
  ), out
  assert sorted(p.name for p in (stopped / "checkpoints").iterdir() if p.name.isdigit()) == ["3"]
  assert [json.loads(l)["step"] for l in (stopped / "metrics.jsonl").read_text().splitlines()] == [
    1,
    2,
    3,
  ]
  assert not (stopped / "model.safetensors").exists()  # not finished: no model yet
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler given back

  with caplog.at_level("INFO", logger="stepcoder_jax"):
    assert sft(stopped) == 0
  assert "sft: resuming from step 3" in caplog.text
  assert sft(ref) == 0
  got, want = (json.loads((d / "sft_summary.json").read_text()) for d in (stopped, ref))
  for key in ("steps_run", "last_loss", "finished"):
    assert got[key] == want[key], key
  assert (stopped / "model.safetensors").read_bytes() == (ref / "model.safetensors").read_bytes()
  strip = lambda d: [
    {k: v for k, v in json.loads(l).items() if k != "time"}
    for l in (d / "metrics.jsonl").read_text().splitlines()
  ]
  assert strip(stopped) == strip(ref)
  assert preemption.read_marker(stopped) is None


# ---------------------------------------------------------------------------------------------
# 2-process local pod


@pytest.mark.slow
def test_pod_processes_signalled_at_different_points_save_the_same_iteration(tmp_path):
  """Process 0 gets SIGTERM while iteration 1 is judged; process 1 only once its save of
  iteration 1 began, after the point where the processes agree. Without the agreement process 1
  would go on to iteration 2 and wait there for process 0 forever."""
  env = _env(tmp_path, PYTHON=sys.executable)
  env.pop("XLA_FLAGS")  # local_pod.sh sets the device count

  def pod(name, *entry, **kw):
    logs = tmp_path / f"{name}_logs"
    p = subprocess.run(
      [
        "bash",
        "launch/local_pod.sh",
        "2",
        "-d",
        "1",
        "--logdir",
        str(logs),
        *entry,
        "--",
        *TRAIN,
        f"--work_dir={tmp_path / name}",
      ],
      cwd=ROOT,
      env=dict(env, **kw),
      capture_output=True,
      text=True,
      timeout=900,
    )
    text = [(logs / f"proc_{i}.log").read_text() for i in range(2)]
    assert p.returncode == 0, (p.stderr + "\n".join(text))[-4000:]
    return p.stdout, text

  pod("ref")
  out, logs = pod(
    "stopped",
    "--entry",
    f"{sys.executable} {HELPERS}",
    PREEMPT_PLAN=json.dumps({"0": [[plan.SUBMIT, 1, "SIGTERM"]], "1": [[plan.SAVE, 1, "SIGTERM"]]}),
  )
  work = tmp_path / "stopped"
  for i, log in enumerate(logs):
    assert f"process {i}: stopped after iteration 1, saved {work}/checkpoints/1" in log, log
    assert "SIGTERM received" in log
  assert f"stopped by SIGTERM after iteration 1: saved {work}/checkpoints/1; " in out
  _, meta = _final_state(work)
  assert meta["iteration"] == 1

  _, logs = pod("stopped")
  assert "resumed from" in logs[0] and "at iteration 1" in logs[0]
  _assert_same_final_state(tmp_path / "ref", work, 2)


# ---------------------------------------------------------------------------------------------
# second signals, interrupted saves, the launcher


def _deliver(sig):
  """A signal to this thread (the main one); its handler runs at the next call."""
  signal.pthread_kill(threading.get_ident(), sig)
  return _called()


def _called():
  return True


def test_a_second_ctrl_c_stops_at_once_except_during_a_save(caplog):
  before = signal.getsignal(signal.SIGTERM)
  with preemption.StopOnSignal() as stop:
    assert not stop.should_stop()
    _deliver(signal.SIGTERM)
    assert stop.received == "SIGTERM" and stop.should_stop()
    _deliver(signal.SIGTERM)  # a repeated SIGTERM (systemd, a launcher passing it on): noted
    with stop.saving():
      _deliver(signal.SIGINT)  # noted, not raised: the save goes on
    with pytest.raises(KeyboardInterrupt, match="second Ctrl-C"):
      _deliver(signal.SIGINT)
  assert signal.getsignal(signal.SIGTERM) == before
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  assert "SIGTERM received again" in caplog.text
  assert "SIGINT received during the save" in caplog.text


def test_a_save_killed_before_its_commit_leaves_the_previous_step(tmp_path):
  """orbax writes a step into a temporary directory and makes it visible by one rename (a
  commit file on GCS): a process killed just before that keeps the previous step usable."""
  code = f"""
import os, signal, numpy as np
from orbax.checkpoint._src.path import atomicity
from stepcoder_jax import checkpoint as ck
from stepcoder_jax.config import CheckpointConfig
c = ck.Checkpointer({str(tmp_path)!r}, CheckpointConfig(async_save=False), items=("policy",))
c.save(1, {{"policy": {{"w": np.arange(4.0)}}}}, force=True)
async def killed(*a, **k):
  os.kill(os.getpid(), signal.SIGKILL)
atomicity.on_commit_callback = killed  # the commit: rename (local) or commit file (GCS)
c.save(2, {{"policy": {{"w": np.arange(4.0) + 1}}}}, force=True)
"""
  p = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900
  )
  assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
  left = sorted(x.name for x in tmp_path.iterdir())
  assert "1" in left and "2" not in left
  assert any(x.startswith("2.orbax-checkpoint-tmp") for x in left), left  # the cut-off save

  from stepcoder_jax import checkpoint as ck
  from stepcoder_jax.config import CheckpointConfig

  with ck.Checkpointer(tmp_path, CheckpointConfig(async_save=False), items=("policy",)) as c:
    assert c.latest_step() == 1
    trees, _ = c.restore()
    np.testing.assert_array_equal(np.asarray(trees["policy"]["w"]), np.arange(4.0))
    c.save(2, {"policy": {"w": np.arange(4.0) + 2}}, force=True)  # the step can be written again
    assert c.latest_step() == 2


def test_local_pod_passes_a_signal_on_to_every_process_and_waits(tmp_path):
  """SIGTERM to launch/local_pod.sh reaches each process once (as on the hosts of a preempted
  slice); the script waits for them and reports their exit status."""
  entry = tmp_path / "entry.py"
  entry.write_text(f"""
import os, signal, sys, time
from pathlib import Path
d = Path({str(tmp_path)!r}); i = os.environ["JAX_PROCESS_ID"]
got = []
signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
(d / f"ready{{i}}").touch()
while not got:
  time.sleep(0.01)
time.sleep(0.2)  # a second signal, were one sent, would arrive meanwhile
(d / f"got{{i}}").write_text(str(len(got)))
""")
  p = subprocess.Popen(
    [
      "bash",
      "launch/local_pod.sh",
      "2",
      "--logdir",
      str(tmp_path / "logs"),
      "--entry",
      f"{sys.executable} {entry}",
    ],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    import time

    deadline = time.time() + 1800  # a hang guard, not a timing check
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
      assert p.poll() is None and time.time() < deadline, p.communicate()
      time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=1800)
  finally:
    if p.poll() is None:
      p.kill()
  assert p.returncode == 0, out + err
  assert [(tmp_path / f"got{i}").read_text() for i in range(2)] == ["1", "1"]


def test_an_ablation_stage_that_stopped_on_a_signal_is_not_marked_done(tmp_path):
  """Stopped and finished train/sft stages both exit 0; STOPPED.json tells them apart."""
  from stepcoder_jax.ablation import stages as ablation

  stage = ablation.Stage("train_x", tmp_path / "train", (), module="this")  # exits 0
  stage.out.mkdir()
  preemption.write_marker(stage.out, {"signal": "SIGTERM"})
  assert ablation.run_stage(stage, tmp_path / "logs")[0] == 0
  assert ablation.read_done(stage.out) is None
  (stage.out / preemption.MARKER).unlink()  # what the resumed run does when it starts
  assert ablation.run_stage(stage, tmp_path / "logs")[0] == 0
  assert ablation.read_done(stage.out)["exit_code"] == 0
