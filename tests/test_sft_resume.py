"""SFT survives a kill: a run SIGKILLed after a checkpoint, then rerun, ends where an
uninterrupted run ends (bit for bit), and a changed setting refuses the old checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stepcoder_jax import cli
from stepcoder_jax.models.config import ModelConfig
from stepcoder_jax.runs import sft, sft_checkpoint
from stepcoder_jax.runs.config import SFTConfig
from test_sft_early_stop import _split

# lr 1e-2 on two problems: the validation NLL is lowest at step 8 and climbs after (measured in
# test_sft_early_stop); patience 0 runs all 24 steps, so the final model is step 8's and comes
# back, on resume, from the HF directory written when step 8 was the best.
STEPS, EVERY, KILL_AT = 24, 4, 12


def _argv(tmp_path: Path, out: Path, *extra: str) -> list[str]:
  train, val = _split()
  probs, vals = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
  probs.write_text("".join(p.to_json() + "\n" for p in train))
  vals.write_text("".join(p.to_json() + "\n" for p in val))
  return [
    "sft",
    "--model",
    "tiny-llama",
    "--problems",
    str(probs),
    "--val_problems",
    str(vals),
    "--out",
    str(out),
    "--steps",
    str(STEPS),
    "--gin.sft.batch_size=2",
    "--gin.sft.learning_rate=0.01",
    "--gin.sft.warmup_steps=0",
    f"--gin.sft.eval_every={EVERY}",
    "--gin.sft.cccs_stages=False",
    *extra,
  ]


def _saved_steps(out: Path) -> list[int]:
  """Finalized checkpoint steps (orbax's temporary directories are not digits)."""
  d = out / "checkpoints"
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def _kill_after_checkpoint(argv: list[str], out: Path) -> int:
  """Run the command in a subprocess; SIGKILL it once a checkpoint >= KILL_AT is final."""
  proc = subprocess.Popen(
    [sys.executable, "-m", "stepcoder_jax", *argv],
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
    text=True,
  )
  try:
    # A hang guard, not a timing check: far above any loaded machine's time for a few steps.
    deadline = time.time() + 1800
    while not any(s >= KILL_AT for s in _saved_steps(out)):
      assert proc.poll() is None, f"ended before a checkpoint: {proc.stderr.read()[-2000:]}"
      assert time.time() < deadline, "no checkpoint after 30 min: the run hangs"
      time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=900) == -signal.SIGKILL
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
    proc.stderr.close()
  return max(_saved_steps(out))


def _rows(out: Path) -> list[dict]:
  rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, capsys, caplog):
  killed = tmp_path / "killed"
  at = _kill_after_checkpoint(_argv(tmp_path, killed), killed)
  assert KILL_AT <= at < STEPS
  # the best model so far is already on disk, marked unfinished (the command would not skip it)
  partial = json.loads((killed / "sft_summary.json").read_text())
  assert partial["finished"] is False and partial["best_step"] == 8
  assert sft.finished_summary(killed) is None

  # another learning rate must not continue this checkpoint: one line, naming the field
  before = _saved_steps(killed)
  assert cli.main(_argv(tmp_path, killed, "--gin.sft.learning_rate=0.02")) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and "sft.learning_rate=0.01" in err and "0.02" in err
  assert "delete" in err and str(killed / "checkpoints") in err
  assert _saved_steps(killed) == before  # left as it was

  with caplog.at_level("INFO", logger="stepcoder_jax"):
    assert cli.main(_argv(tmp_path, killed)) == 0
  assert f"sft: resuming from step {at}" in caplog.text
  plain = tmp_path / "plain"
  assert cli.main(_argv(tmp_path, plain)) == 0
  capsys.readouterr()

  # Tolerance 0: the same compiled steps on the same batches from exactly restored arrays (orbax,
  # and safetensors for the best step's weights) on a deterministic CPU backend.
  got, want = (json.loads((d / "sft_summary.json").read_text()) for d in (killed, plain))
  for key in (
    "val_nll",
    "best_step",
    "best_val_nll",
    "steps_run",
    "initial_val_nll",
    "initial_nll",
    "final_nll",
    "last_loss",
    "finished",
  ):
    assert got[key] == want[key], key
  assert want["best_step"] == 8 < at and want["steps_run"] == STEPS
  assert (killed / "model.safetensors").read_bytes() == (plain / "model.safetensors").read_bytes()
  # the steps after the checkpoint were logged again, not twice
  assert _rows(killed) == _rows(plain)
  assert not (killed / "checkpoints").exists() and not (plain / "checkpoints").exists()


def test_fingerprint_ignores_the_step_limit_only_where_the_batches_allow_it():
  # `sft.steps` may change on resume because the first batches are the same for any step limit
  np.testing.assert_array_equal(sft.batch_order(7, 3, 5, 1), sft.batch_order(7, 3, 40, 1)[:5])
  ex = [sft.SFTExample("p", [1, 2], [3], "x")]

  def fp(**kw):
    return sft_checkpoint.fingerprint(SFTConfig(**kw), ModelConfig.tiny(), ex, [], (16, 16), "if")

  assert fp(steps=10, patience=2) == fp(steps=99, patience=5)
  assert fp(batch_size=4) != fp(batch_size=2)
  assert fp() != sft_checkpoint.fingerprint(
    SFTConfig(), ModelConfig.tiny(), ex * 2, [], (16, 16), "if"
  )
