"""Held-out measures that move before whole-problem pass rates: the share of unit tests passed
and the subtask from the last CCCS start point (real prompts, real judging, planted completions)."""

import json

import pytest

from stepcoder_jax import cli
from stepcoder_jax.data.builders.stepcoder_builtin import read_builtin
from stepcoder_jax.data.record import Problem
from stepcoder_jax.models.loading import load_model
from stepcoder_jax.rl import cccs, rollout
from stepcoder_jax.rl.config import CCCSConfig
from stepcoder_jax.runs import evaluation as ev
from stepcoder_jax.runs import sft
from stepcoder_jax.runs.config import EvalConfig
from test_evaluate import pool, tiny  # noqa: F401  (the shared judging pool and tiny model)

# f(x) = 2x on five inputs; HALF_RIGHT is right for x < 2 only: 2 of the 5 tests pass.
DOUBLE = Problem(
  id="t/double",
  question="Return twice x.",
  test_kind="call",
  fn_name="f",
  inputs=[[0], [1], [2], [3], [4]],
  outputs=[0, 2, 4, 6, 8],
  canonical_solution="def f(x):\n    return 2 * x\n",
  difficulty="introductory",
)
HALF_RIGHT = "def f(x):\n    return 2 * x if x < 2 else -1\n```"
RIGHT = "def f(x):\n    return x + x\n```"


@pytest.fixture(scope="module")
def tok(tiny):
  return tiny[1]


def _staged(n=3):
  """Builtin call/stdio problems whose curriculum has a stage before s* = 0 ('if')."""
  cur = cccs.Curriculum(CCCSConfig(statements="if"))
  return [p for p in read_builtin() if cur.register(p).num_stages >= 2][:n]


def test_tests_share_is_the_hand_count(pool, tok, tmp_path):
  rep = ev.evaluate(
    None,
    tok,
    [DOUBLE],
    EvalConfig(),
    pool,
    out_dir=tmp_path,
    completion_fn=lambda p, parts, s: HALF_RIGHT,
  )
  (row,) = rep.samples
  assert (row["outcome"], row["tests_passed"], row["tests_total"]) == ("failed", 2, 5)
  (res,) = rep.problems
  assert res.tests_share == pytest.approx(2 / 5) and res.greedy_passed is False
  assert rep.table["all"]["tests passed"] == pytest.approx(0.4)
  assert rep.table["introductory"]["tests passed"] == pytest.approx(0.4)
  assert "| **all** | 1 | 0.0 | 0.0 | 40.0 |" in (tmp_path / "eval.md").read_text()
  rec = json.loads((tmp_path / "eval.json").read_text())["problems"][0]
  assert rec == {
    "problem_id": "t/double",
    "difficulty": "introductory",
    "n": 1,
    "c": 0,
    "greedy_passed": False,
    "tests_share": pytest.approx(0.4),
  }


def test_tests_share_uses_the_greedy_sample_else_the_mean(pool, tok):
  # samples 0 and 1 pass 2/5 and 5/5; the extra greedy sample (index n = 2) passes 2/5
  def planted(p, parts, s):
    return RIGHT if s == 1 else HALF_RIGHT

  with_greedy = EvalConfig(num_samples=2, temperature=0.8, greedy=True)
  rep = ev.evaluate(None, tok, [DOUBLE], with_greedy, pool, completion_fn=planted)
  assert rep.problems[0].c == 1 and rep.problems[0].tests_share == pytest.approx(0.4)
  no_greedy = EvalConfig(num_samples=2, temperature=0.8, greedy=False)
  rep = ev.evaluate(None, tok, [DOUBLE], no_greedy, pool, completion_fn=planted)
  assert rep.problems[0].tests_share == pytest.approx((0.4 + 1.0) / 2)


def test_subtask_prompt_is_the_training_prompt_of_the_first_stage(pool, tok, tmp_path):
  probs = _staged()
  assert len(probs) == 3
  seen = {}

  def remainder(p, parts, s):
    seen[p.id] = parts
    return sft.target_text(p.canonical_solution, parts.code_prefix)

  cfg = EvalConfig(max_prompt_tokens=512)
  rep = ev.evaluate(
    None,
    tok,
    probs,
    cfg,
    pool,
    out_dir=tmp_path,
    name="sub",
    completion_fn=remainder,
    subtask=True,
    statements="if",
  )
  for p in probs:
    cur = cccs.Curriculum(CCCSConfig(statements="if"))
    first = cur.prefix(p)  # stage 0 in training order: the last start point, the longest prefix
    assert first and len(first) == max(
      len(cur.prefix_at(p, k)) for k in range(cur.register(p).num_stages)
    )
    assert seen[p.id].code_prefix == first
    (item,), _ = rollout.make_items([p], cur, tok, cfg.prompt_style, cfg.max_prompt_tokens)
    assert seen[p.id].text == item.prompt.text  # the prompt the trainer gives at that stage
  # the canonical remainder passes every subtask, judged on code_prefix + completion
  assert rep.greedy_pass_at_1() == 1.0 and rep.table["all"]["tests passed"] == 1.0
  js = json.loads((tmp_path / "sub.json").read_text())
  assert js["settings"]["mode"] == "subtask" and js["settings"]["subtask_excluded"] == 0
  assert [(r["problem_id"], r["subtask_passed"], r["tests_share"]) for r in js["problems"]] == [
    (p.id, True, 1.0) for p in probs
  ]


def test_wrong_remainder_fails_and_a_problem_without_conditionals_is_excluded(pool, tok):
  staged = _staged(1)
  plain = Problem(
    id="t/plain",
    question="Return twice x.",
    test_kind="call",
    fn_name="f",
    inputs=[[1]],
    outputs=[2],
    canonical_solution="def f(x):\n    return 2 * x\n",
  )
  called = []

  def broken(p, parts, s):
    called.append(p.id)
    return "this is not ( python\n```"

  rep = ev.evaluate(
    None, tok, staged + [plain], EvalConfig(), pool, completion_fn=broken, subtask=True
  )
  assert called == [staged[0].id]  # the excluded problem is never sampled
  assert rep.settings["subtask_excluded"] == 1
  assert rep.settings["subtask_excluded_ids"] == ["t/plain"]
  recs = {r["problem_id"]: r for r in map(ev.problem_record, rep.problems, [True] * 2)}
  assert recs["t/plain"]["subtask_passed"] is None and recs["t/plain"]["n"] == 0
  assert recs["t/plain"]["tests_share"] is None
  assert recs[staged[0].id]["subtask_passed"] is False
  assert recs[staged[0].id]["tests_share"] == 0.0
  assert rep.table["all"]["problems"] == 1  # the table covers the problems with a subtask
  assert ev.subtask_prefix(plain, "if") is None


def test_eval_command_subtask_writes_both_reports(tmp_path, capsys):
  from stepcoder_jax.models import hf_io

  cfg, model, tok = load_model("tiny-llama")
  src = hf_io.export(cfg, model, tok, tmp_path / "tiny")
  probs = tmp_path / "problems.jsonl"
  probs.write_text("".join(p.to_json() + "\n" for p in _staged(2) + [DOUBLE]))
  out = tmp_path / "eval"
  rc = cli.main(
    [
      "eval",
      "--model",
      str(src),
      "--problems",
      str(probs),
      "--out",
      str(out),
      "--subtask",
      "--gin.eval.max_new_tokens=8",
      "--gin.execution.workers=2",
    ]
  )
  assert rc == 0
  printed = capsys.readouterr().out
  assert "1 of 3 problems without a curriculum excluded" in printed
  main = json.loads((out / "eval.json").read_text())
  sub = json.loads((out / "eval_subtask.json").read_text())
  assert [r["problem_id"] for r in main["problems"]] == [r["problem_id"] for r in sub["problems"]]
  assert all(0.0 <= r["tests_share"] <= 1.0 for r in main["problems"])
  assert [r["subtask_passed"] is None for r in sub["problems"]] == [False, False, True]
  assert "subtask_passed" not in main["problems"][0]
  assert len((out / "eval_subtask_samples.jsonl").read_text().splitlines()) == 2
