"""Evaluation end to end: prompts -> completions -> real judging -> pass@k tables and files;
a killed evaluation resumed from its journal."""

import dataclasses
import json

import jax
import pytest
from flax import nnx

from stepcoder_jax import cli, sampling
from stepcoder_jax.data.builders.stepcoder_builtin import read_builtin
from stepcoder_jax.execution.config import ExecutionConfig
from stepcoder_jax.models.loading import load_model
from stepcoder_jax.runs import eval_journal
from stepcoder_jax.runs import evaluation as ev
from stepcoder_jax.runs import sft
from stepcoder_jax.runs.config import EvalConfig

OUTCOMES = {"passed", "failed", "runtime_error", "timeout", "compile_error"}


@pytest.fixture(scope="module")
def pool():
  from stepcoder_jax.execution import ExecutionPool

  with ExecutionPool(ExecutionConfig(workers=2, coverage=False)) as p:
    yield p


@pytest.fixture(scope="module")
def tiny():
  _, model, tok = load_model("tiny-llama")
  return model, tok


def _mixed_problems():
  """Two call-based and two stdio problems of different difficulties (if the set has them)."""
  probs = read_builtin()
  call = [p for p in probs if p.test_kind == "call"]
  stdio = [p for p in probs if p.test_kind == "stdio"]
  return [call[0], stdio[0], call[-1], stdio[-1]]


def test_planted_completions_give_the_known_pass_at_k(pool, tiny, tmp_path):
  # Samples 0 and 1 (and the greedy one) are the canonical solutions, samples 2 and 3 do not
  # compile: c = 2 of n = 4 for every problem, so pass@1 = 2/4, pass@2 = 1 - C(2,2)/C(4,2) = 5/6,
  # pass@4 = 1, and greedy pass@1 = 1. The canonical text goes through the same path as a
  # sampled one (closing fence cut by the stop strings, code prefix prepended, pool judging).
  _, tok = tiny
  problems = _mixed_problems()
  cfg = EvalConfig(num_samples=4, ks=(1, 2, 4, 8), temperature=0.7, greedy=True)

  def planted(problem, parts, s):
    if s in (0, 1, 4):
      return sft.target_text(problem.canonical_solution, parts.code_prefix) + "\ntrailing junk"
    return "this is not ( python\n```"

  rep = ev.evaluate(None, tok, problems, cfg, pool, out_dir=tmp_path, completion_fn=planted)
  assert rep.settings["n"] == 4 and rep.settings["ks"] == [1, 2, 4]  # k = 8 > n is dropped
  assert rep.pass_at(1) == pytest.approx(0.5)
  assert rep.pass_at(2) == pytest.approx(5 / 6)
  assert rep.pass_at(4) == pytest.approx(1.0)
  assert rep.greedy_pass_at_1() == pytest.approx(1.0)
  assert rep.pass_at(8) is None
  assert [(r.n, r.c, r.greedy_passed) for r in rep.problems] == [(4, 2, True)] * 4
  by_outcome = {(s["sample"], s["outcome"]) for s in rep.samples}
  assert by_outcome == {
    (0, "passed"),
    (1, "passed"),
    (4, "passed"),
    (2, "compile_error"),
    (3, "compile_error"),
  }
  assert all("junk" not in s["completion"] and "```" not in s["completion"] for s in rep.samples)
  # every difficulty row is there, and the 'all' row counts every problem
  diffs = {p.difficulty for p in problems}
  assert set(rep.table) == diffs | {"all"} and rep.table["all"]["problems"] == 4
  # files: markdown + JSON tables and one JSONL line per judged sample
  md = (tmp_path / "eval.md").read_text()
  assert "| **all** | 4 | 50.0 | 83.3 | 100.0 | 100.0 | 100.0 |" in md  # last: tests passed
  js = json.loads((tmp_path / "eval.json").read_text())
  assert js["table"]["all"]["pass@2"] == pytest.approx(5 / 6)
  assert len(js["problems"]) == 4
  lines = (tmp_path / "eval_samples.jsonl").read_text().splitlines()
  assert len(lines) == 4 * 5 and json.loads(lines[0])["problem_id"] == problems[0].id


def test_tiny_model_greedy_report_matches_its_samples(pool, tiny, tmp_path):
  model, tok = tiny
  problems = _mixed_problems()
  cfg = EvalConfig(num_samples=3, temperature=0.0, max_new_tokens=12, batch_size=4)
  rep = ev.evaluate(model, tok, problems, cfg, pool, out_dir=tmp_path, name="greedy")
  assert rep.settings["n"] == 1  # temperature 0: one greedy sample per problem
  assert len(rep.samples) == len(problems)
  for r, p in zip(rep.problems, problems):
    rows = [s for s in rep.samples if s["problem_id"] == p.id]
    assert len(rows) == 1 and rows[0]["outcome"] in OUTCOMES and rows[0]["greedy"]
    assert r.c == sum(s["outcome"] == "passed" for s in rows)
    assert r.greedy_passed == (r.c == 1)
    assert rows[0]["tests_total"] >= 1
  passed = sum(s["outcome"] == "passed" for s in rep.samples)
  assert rep.pass_at(1) == pytest.approx(passed / len(problems))
  assert rep.greedy_pass_at_1() == pytest.approx(passed / len(problems))
  assert (tmp_path / "greedy.md").is_file() and (tmp_path / "greedy_samples.jsonl").is_file()
  assert set(rep.metrics()) >= {"all/pass@1", "all/greedy_pass@1"}


def test_too_long_prompts_count_as_failures(tiny):
  _, tok = tiny
  problems = _mixed_problems()[:2]
  cfg = EvalConfig(max_prompt_tokens=16)
  called = []
  rep = ev.evaluate(
    None, tok, problems, cfg, pool=None, completion_fn=lambda *a: called.append(a) or ""
  )
  assert not called  # nothing sampled or judged
  assert rep.pass_at(1) == 0.0 and rep.table["all"]["problems"] == 2
  assert {s["outcome"] for s in rep.samples} == {ev.PROMPT_TOO_LONG}


def test_effective_samples():
  assert ev.effective_samples(EvalConfig(num_samples=5, ks=(1, 5), temperature=0.0)) == (
    1,
    (1,),
    False,
  )
  assert ev.effective_samples(EvalConfig(num_samples=5, ks=(5, 1, 10), temperature=0.8)) == (
    5,
    (1, 5),
    True,
  )
  assert (
    ev.effective_samples(
      dataclasses.replace(EvalConfig(num_samples=2, temperature=1.0), greedy=False)
    )[2]
    is False
  )


# ----------------------------------------------------------------------------- resume
# A killed evaluation resumes: the sampler batches it finished are replayed from its journal,
# only the rest are sampled, and the report equals an uninterrupted run's.

# 3 problems x 2 samples in batches of 2: 3 temperature batches, then 2 greedy ones.
CFG = EvalConfig(
  num_samples=2, ks=(1, 2), temperature=1.0, max_new_tokens=8, batch_size=2, greedy=True
)
BATCHES = 5
GENERATE_IDS = sampling.generate_ids  # the real sampler, before any test wraps it


class Killed(Exception):
  """Stands for the kill (pytest reserves KeyboardInterrupt for itself)."""


def _count_sampler_calls(monkeypatch, kill_at: int | None = None) -> list:
  """Counts `sampling.generate_ids` calls; the call number `kill_at` raises instead (a kill)."""
  calls, real = [], GENERATE_IDS

  def counted(*args, **kwargs):
    if kill_at is not None and len(calls) == kill_at:
      raise Killed()
    calls.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(sampling, "generate_ids", counted)
  return calls


def _texts(report):
  return [(s["problem_id"], s["sample"], s["completion"], s["outcome"]) for s in report.samples]


def test_a_killed_evaluation_resumes_where_it_stopped(pool, tiny, tmp_path, monkeypatch):
  model, tok = tiny
  problems = read_builtin()[:3]
  whole = ev.evaluate(model, tok, problems, CFG, pool, out_dir=tmp_path / "whole")

  out = tmp_path / "killed"
  _count_sampler_calls(monkeypatch, kill_at=3)
  with pytest.raises(Killed):
    ev.evaluate(model, tok, problems, CFG, pool, out_dir=out, resume=True)
  journal = out / "eval.journal.jsonl"
  assert not (out / "eval.json").exists()
  assert len(journal.read_text().splitlines()) == 1 + 3  # fingerprint + the 3 finished batches

  calls = _count_sampler_calls(monkeypatch)
  resumed = ev.evaluate(model, tok, problems, CFG, pool, out_dir=out, resume=True)
  assert len(calls) == BATCHES - 3  # only the unfinished batches were sampled
  assert _texts(resumed) == _texts(whole)
  assert resumed.table == whole.table
  assert not journal.exists() and (out / "eval.json").is_file()


def test_other_settings_do_not_reuse_a_journal(pool, tiny, tmp_path, monkeypatch):
  model, tok = tiny
  problems = read_builtin()[:3]
  _count_sampler_calls(monkeypatch, kill_at=2)
  with pytest.raises(Killed):
    ev.evaluate(model, tok, problems, CFG, pool, out_dir=tmp_path, resume=True)
  calls = _count_sampler_calls(monkeypatch)
  other_seed = dataclasses.replace(CFG, seed=1)
  ev.evaluate(model, tok, problems, other_seed, pool, out_dir=tmp_path, resume=True)
  assert len(calls) == BATCHES  # every batch sampled afresh


def test_the_fingerprint_follows_the_weights():
  _, model, _ = load_model("tiny-llama")
  rows = [(0, [1, 2, 3])]
  before = eval_journal.fingerprint(model, {"n": 1}, rows)
  assert eval_journal.fingerprint(model, {"n": 1}, rows) == before
  assert eval_journal.fingerprint(model, {"n": 2}, rows) != before
  assert eval_journal.fingerprint(model, {"n": 1}, [(0, [1, 2, 4])]) != before
  state = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(state)
  leaves[-1] = leaves[-1] * 1.001  # one small change in one layer
  nnx.update(model, jax.tree.unflatten(treedef, leaves))
  assert eval_journal.fingerprint(model, {"n": 1}, rows) != before


def test_a_line_cut_by_a_kill_is_dropped(tmp_path):
  path = tmp_path / "eval.journal.jsonl"
  j = eval_journal.Journal(path, "abc")
  j.record("temperature", 0, {0: "x = 1", 1: "print(2)"})
  j.record("greedy", 0, {2: "pass"})
  j.close()
  with open(path, "a") as f:
    f.write('{"phase": "temperature", "batch": 1, "compl')  # the kill cut this write
  again = eval_journal.Journal(path, "abc")
  assert again.resumed == 2
  assert again.get("temperature", 0) == {0: "x = 1", 1: "print(2)"}
  assert again.get("greedy", 0) == {2: "pass"} and again.get("temperature", 1) is None
  again.record("temperature", 1, {3: "y"})
  again.close()
  lines = [json.loads(t) for t in path.read_text().splitlines()]  # every line whole again
  assert lines[0] == {"fingerprint": "abc"} and len(lines) == 4
  fresh = eval_journal.Journal(path, "another model")
  assert fresh.resumed == 0 and fresh.get("temperature", 0) is None
  fresh.close(delete=True)
  assert not path.exists()


# ----------------------------------------------------------------------------- CLI


def test_eval_command_on_a_tiny_model_dir(tmp_path, capsys):
  from stepcoder_jax.models import hf_io

  cfg, model, tok = load_model("tiny-llama")
  src = hf_io.export(cfg, model, tok, tmp_path / "tiny")
  out = tmp_path / "eval"
  rc = cli.main(
    [
      "eval",
      "--model",
      str(src),
      "--dataset",
      "stepcoder_builtin",
      "--split",
      "test",
      "--data_dir",
      str(tmp_path / "tfds"),
      "--out",
      str(out),
      "--max_problems",
      "3",
      "--n",
      "2",
      "--k",
      "1,2",
      "--temperature",
      "1.0",
      "--gin.eval.max_new_tokens=8",
      "--gin.eval.greedy=False",
      "--gin.execution.workers=2",
    ]
  )
  assert rc == 0
  printed = capsys.readouterr().out
  assert "| **all** | 3 |" in printed
  js = json.loads((out / "eval.json").read_text())
  assert js["settings"]["n"] == 2 and js["settings"]["ks"] == [1, 2]
  assert js["settings"]["config"]["max_new_tokens"] == 8
  assert js["table"]["all"]["problems"] == 3
  assert len((out / "eval_samples.jsonl").read_text().splitlines()) == 6
  assert not list(out.glob("*.journal.jsonl"))  # the journal goes once the report is written
  assert all(p["problem_id"].endswith(("0", "5")) for p in js["problems"])  # the test split


def test_eval_command_missing_dataset_is_a_one_line_error(tmp_path, capsys):
  rc = cli.main(
    [
      "eval",
      "--model",
      "tiny-llama",
      "--dataset",
      "no_such_dataset",
      "--data_dir",
      str(tmp_path),
      "--out",
      str(tmp_path / "o"),
    ]
  )
  err = capsys.readouterr().err.strip()
  assert rc == 2
  assert err.startswith("error: ") and "no_such_dataset" in err and "\n" not in err


def test_eval_command_bad_k_is_a_usage_error(tmp_path, capsys):
  rc = cli.main(["eval", "--model", "tiny-llama", "--out", str(tmp_path), "--k", "1,zero"])
  assert rc == 2
  assert "--k" in capsys.readouterr().err
