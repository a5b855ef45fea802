"""SFT to convergence on validation NLL: early stopping, the best model saved, the summary."""

import dataclasses
import json

import pytest
from flax import nnx

from stepcoder_jax import cli
from stepcoder_jax.data.builders.stepcoder_builtin import read_builtin
from stepcoder_jax.models.loading import load_model
from stepcoder_jax.runs import sft
from stepcoder_jax.runs.config import SFTConfig


def _split():
  """Two call problems to train on and two others to validate on, questions cut short."""
  calls = [
    dataclasses.replace(p, question=p.question[:60])
    for p in read_builtin()
    if p.test_kind == "call"
  ][:4]
  return calls[:2], calls[2:]


def _val_nll(model, tok, val) -> float:
  ex, _ = sft.build_examples(val, tok)
  gd, params, rest = nnx.split(model, nnx.Param, ...)
  shapes = sft.example_shapes(ex)
  return sft.dataset_nll(
    sft.make_eval_nll(gd, rest, 128, prompt_len=shapes[0]), params, ex, tok.pad_token_id, shapes, 2
  )


def _metrics(out):
  return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


def test_early_stop_bookkeeping():
  es = sft.EarlyStop(patience=2, min_delta=0.1)
  assert es.update(5, 3.0) and es.best_step == 5
  assert not es.update(10, 2.95)  # better, but by less than min_delta
  assert not es.should_stop
  assert es.update(15, 2.5) and (es.best, es.best_step, es.bad) == (2.5, 15, 0)
  assert not es.update(20, 2.6) and not es.update(25, 2.5)
  assert es.should_stop
  assert [h["step"] for h in es.history] == [5, 10, 15, 20, 25]
  never = sft.EarlyStop(patience=0, min_delta=0.0)
  for step in range(10):
    never.update(step, float(step))
  assert not never.should_stop and never.best_step == 0


def test_stops_on_validation_nll_and_saves_the_best_step(tmp_path):
  # lr 1e-2 on two problems memorizes them: the validation NLL of two other problems falls from
  # ~5.98 (uniform over 384 tokens) to ~4.6 within 8 steps, then climbs past 8 by step 120
  # (measured). With patience 3 the run must stop long before 120 steps, and the model on disk
  # must be the best evaluation's, not the last step's.
  _, model, tok = load_model("tiny-llama")
  train, val = _split()
  cfg = SFTConfig(
    steps=120,
    batch_size=2,
    learning_rate=1e-2,
    warmup_steps=0,
    cccs_stages=False,
    eval_every=4,
    patience=3,
  )
  out = tmp_path / "sft"
  _, summary = sft.train_sft(model, tok, train, cfg, out, progress=False, val_problems=val)
  assert summary["stop_reason"] == "patience" and summary["finished"] is True
  assert summary["steps_run"] < 120
  history = summary["val_nll"]
  assert [h["step"] for h in history] == list(range(4, summary["steps_run"] + 1, 4))
  best = min(history, key=lambda h: h["val_nll"])
  assert (summary["best_step"], summary["best_val_nll"]) == (best["step"], best["val_nll"])
  assert summary["best_val_nll"] < summary["initial_val_nll"] - 0.5  # it did learn first
  assert len(history) - 1 - history.index(best) == 3  # exactly `patience` evaluations after it
  assert summary["best_step"] < summary["steps_run"]
  # the last evaluation (the parameters at the stop) is worse: saving those would be visible
  assert history[-1]["val_nll"] > summary["best_val_nll"] + 1e-3
  _, saved, tok2 = load_model(str(out))
  assert _val_nll(saved, tok2, val) == pytest.approx(summary["best_val_nll"], abs=1e-5)
  assert _val_nll(model, tok, val) == pytest.approx(summary["best_val_nll"], abs=1e-5)
  rows = _metrics(out)
  assert [r["step"] for r in rows if "sft/val_nll" in r] == [0] + [h["step"] for h in history]
  assert [r["step"] for r in rows if "sft/loss" in r] == list(range(1, summary["steps_run"] + 1))
  on_disk = json.loads((out / "sft_summary.json").read_text())
  assert on_disk["best_step"] == summary["best_step"] and on_disk["finished"] is True


def test_patience_zero_runs_every_step(tmp_path):
  _, model, tok = load_model("tiny-llama")
  train, val = _split()
  cfg = SFTConfig(
    steps=12,
    batch_size=2,
    learning_rate=1e-2,
    warmup_steps=0,
    cccs_stages=False,
    eval_every=5,
    patience=0,
  )
  _, summary = sft.train_sft(model, tok, train, cfg, tmp_path, progress=False, val_problems=val)
  assert summary["steps_run"] == 12 and summary["stop_reason"] == "max_steps"
  assert [h["step"] for h in summary["val_nll"]] == [5, 10, 12]  # and at the end
  assert _val_nll(model, tok, val) == pytest.approx(summary["best_val_nll"], abs=1e-5)


def test_bad_val_problems_path_is_a_one_line_error(tmp_path, capsys):
  probs = tmp_path / "train.jsonl"
  probs.write_text("".join(p.to_json() + "\n" for p in _split()[0]))
  missing = tmp_path / "nope.jsonl"
  rc = cli.main(
    [
      "sft",
      "--model",
      "tiny-llama",
      "--problems",
      str(probs),
      "--val_problems",
      str(missing),
      "--out",
      str(tmp_path / "o"),
    ]
  )
  err = capsys.readouterr().err.strip()
  assert rc == 2
  assert err.startswith("error: ") and "--val_problems" in err and str(missing) in err
  assert "\n" not in err
  assert not (tmp_path / "o").exists()


def test_sft_command_skips_a_finished_run(tmp_path, capsys):
  train, val = _split()
  probs, vals = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
  probs.write_text("".join(p.to_json() + "\n" for p in train))
  vals.write_text("".join(p.to_json() + "\n" for p in val))
  out = tmp_path / "sft"
  argv = [
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
    "4",
    "--gin.sft.batch_size=2",
    "--gin.sft.eval_every=2",
    "--gin.sft.cccs_stages=False",
  ]
  assert cli.main(argv) == 0
  text = capsys.readouterr().out
  assert "validation NLL" in text and "best" in text
  weights = sorted(out.glob("*.safetensors"))
  stamp = [w.stat().st_mtime_ns for w in weights]
  assert weights and cli.main(argv) == 0
  assert "already holds a finished run" in capsys.readouterr().out
  assert [w.stat().st_mtime_ns for w in weights] == stamp  # nothing was trained or rewritten
