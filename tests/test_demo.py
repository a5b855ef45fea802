"""`stepcoder-jax demo` (runs/demo.py): the before/after table with paired intervals, built from
per-problem records, and a tiny end-to-end demo whose final model `eval` and `export` take."""

import json
import re
from pathlib import Path

import pytest

from stepcoder_jax import cli
from stepcoder_jax.ablation import stages
from stepcoder_jax.runs import demo

# The smallest demo that runs every stage: the tiny random Llama instead of Gemma 3 270M, so the
# gin's Gemma output vocabulary is switched off.
TINY = [
  "--model",
  "tiny-llama",
  "--gin.model.output_vocab=None",
  "--gin.sft.steps=2",
  "--gin.sft.max_len=1024",
  "--gin.sft.nll_examples=0",
  "--gin.train.num_iterations=1",
  "--gin.train.problems_per_iteration=2",
  "--gin.train.max_new_tokens=16",
  "--gin.eval.max_problems=4",
  "--gin.eval.max_new_tokens=16",
]


def _write_eval(
  work: Path, stage: str, passed: list[bool], shares: list[float], subtask: list[bool | None]
) -> None:
  """A finished evaluation of one stage in the demo's layout (records as runs/evaluation.py
  writes them), problem i being 'p{i}'; the first half 'introductory', the rest 'interview'."""
  out = demo.eval_dir(work, stage)
  out.mkdir(parents=True, exist_ok=True)  # a later call rewrites the stage
  n = len(passed)
  diff = ["introductory" if i < n // 2 else "interview" for i in range(n)]
  recs = [
    {
      "problem_id": f"p{i}",
      "difficulty": diff[i],
      "n": 1,
      "c": int(passed[i]),
      "greedy_passed": passed[i],
      "tests_share": shares[i],
    }
    for i in range(n)
  ]
  (out / "eval.json").write_text(json.dumps({"problems": recs}))
  sub = [
    {
      "problem_id": f"p{i}",
      "difficulty": diff[i],
      "n": int(s is not None),
      "c": int(bool(s)),
      "greedy_passed": s,
      "tests_share": None,
      "subtask_passed": s,
    }
    for i, s in enumerate(subtask)
  ]
  (out / "eval_subtask.json").write_text(json.dumps({"problems": sub}))
  stages.write_done(out, {"stage": stage})


def _row(report: str, label: str) -> list[str]:
  line = next(l for l in report.splitlines() if l.startswith(f"| {label} |"))
  return [c.strip() for c in line.strip("|").split("|")][1:]


def test_table_has_intervals_and_identical_stages_differ_by_exactly_zero(tmp_path):
  n = 20
  base = ([False] * n, [0.1 * (i % 5) for i in range(n)], [False] * (n - 2) + [None, None])
  _write_eval(tmp_path, "base", *base)
  _write_eval(tmp_path, "sft", *base)  # SFT identical to base, problem by problem
  # StepCoder passes 15 of the 20 problems SFT fails, every test of them, and 15 subtasks.
  _write_eval(
    tmp_path,
    "stepcoder",
    [i < 15 for i in range(n)],
    [1.0 if i < 15 else 0.1 * (i % 5) for i in range(n)],
    [i < 15 for i in range(n - 2)] + [None, None],
  )
  table, _ = demo.write_report(tmp_path, "tiny-llama", tmp_path / "sft")
  report = (tmp_path / "report.md").read_text()
  assert table in report
  assert "| | greedy pass@1 (n = 20) | tests share (n = 20) | subtask pass rate (n = 18) |" in table
  for label in ("base", "SFT", "StepCoder"):
    assert all(re.fullmatch(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", c) for c in _row(table, label))
  assert _row(table, "SFT - base") == ["+0.0 [+0.0, +0.0]"] * 3  # exactly 0, no '*'
  step = _row(table, "StepCoder - SFT")
  assert step[0].startswith("+75.0 [") and step[0].endswith(" *")
  assert step[2].startswith("+83.3 [") and step[2].endswith(" *")  # 15 of 18 subtasks
  line = next(l for l in report.splitlines() if l.startswith("- **SFT - base**"))
  assert "Intervals include 0" in line and "exclude" not in line
  line = next(l for l in report.splitlines() if l.startswith("- **StepCoder - SFT**"))
  assert line.startswith("- **StepCoder - SFT**: Intervals exclude 0 for greedy pass@1 +75.0")
  verdict = demo.rl_verdict(demo.stage_values(tmp_path))
  assert verdict.startswith("RL (StepCoder - SFT): raised greedy pass@1 by +75.0 [")
  assert "raised tests share" in verdict and "raised subtask pass rate by +83.3" in verdict
  _write_eval(tmp_path, "stepcoder", *base)  # StepCoder identical to SFT: nothing moved
  assert "no measure moved" in demo.rl_verdict(demo.stage_values(tmp_path))
  data = json.loads((tmp_path / "report.json").read_text())
  d = data["differences"]["stepcoder-sft"]["greedy pass@1"]
  assert d["value"] == pytest.approx(0.75) and d["low"] > 0 and d["n"] == n
  assert data["differences"]["sft-base"]["tests share"] == {
    "value": 0.0,
    "low": 0.0,
    "high": 0.0,
    "n": n,
    "up": 0,
    "down": 0,
  }
  assert (d["up"], d["down"]) == (15, 0)  # the 15 problems StepCoder gained
  assert data["pass@1"]["stepcoder"] == {"all": 0.75, "introductory": 1.0, "interview": 0.5}
  assert str(demo.final_model_dir(tmp_path)) in report
  assert (tmp_path / "pass_at_1.png").stat().st_size > 1000
  assert "![pass at 1](pass_at_1.png)" in report  # embedded, by a link relative to the report
  assert "## Budget" in report and demo.budget_line() in report


def test_budget_line_is_the_configured_budget():
  # The budget the gin sets, so that nobody reads a smoke run as a measurement.
  import gin

  gin.clear_config()
  try:
    gin.parse_config(
      [
        "sft.steps = 3",
        "sft.batch_size = 2",
        "train.num_iterations = 5",
        "train.problems_per_iteration = 2",
        "train.samples_per_problem = 2",
      ]
    )
    line = demo.budget_line()
  finally:
    gin.clear_config()
  assert line.startswith(
    "budget: SFT 3 steps of 2 examples; StepCoder 5 PPO iterations x "
    "2 problems x 2 samples = 20 rollouts. A smoke-sized run"
  )
  assert line.endswith(demo.ABLATION_RESULTS)


def test_a_measure_without_problems_reads_na_and_the_json_stays_valid(tmp_path):
  for stage in demo.STAGES:  # no evaluated problem has a CCCS subtask
    _write_eval(tmp_path, stage, [True, False], [1.0, 0.5], [None, None])
  table, _ = demo.write_report(tmp_path, None, tmp_path / "sft")
  assert _row(table, "StepCoder")[2] == "n/a" and _row(table, "StepCoder - SFT")[2] == "n/a"

  def no_nan(name):
    raise AssertionError(f"report.json holds {name}")

  data = json.loads((tmp_path / "report.json").read_text(), parse_constant=no_nan)
  assert "subtask pass rate" not in data["measures"]["base"]
  assert data["measures"]["base"]["greedy pass@1"]["value"] == 0.5


# ------------------------------------------------------------------ the whole command (slow)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
  """One tiny demo: (work dir, what it printed)."""
  work = tmp_path_factory.mktemp("demo") / "run"
  out = _run_demo(work)
  return work, out


def _run_demo(work: Path) -> str:
  import contextlib
  import io

  buf = io.StringIO()
  with contextlib.redirect_stdout(buf):
    assert cli.main(["demo", "--work_dir", str(work), *TINY]) == 0
  return buf.getvalue()


@pytest.mark.slow
def test_tiny_demo_prints_table_and_paths_and_its_final_model_loads(tiny_demo, tmp_path):
  work, printed = tiny_demo
  final = demo.final_model_dir(work)
  assert "| StepCoder - SFT | " in printed and "| base | " in printed
  assert f"report: {work / 'report.md'}" in printed
  assert "\nRL (StepCoder - SFT): " in printed  # the plain line on what the RL stage moved
  assert "budget: SFT 2 steps of " in printed  # TINY's gin, not the Gemma demo's
  assert "StepCoder 1 PPO iterations x 2 problems x " in printed
  assert f"final model (HF directory): {final}" in printed
  assert f"plot: {work / 'pass_at_1.png'}" in printed
  assert f"plot: {work / 'stepcoder' / 'training_curves.png'}" in printed
  for stage in demo.STAGES:
    for f in ("eval.json", "eval_subtask.json", "DONE.json"):
      assert (demo.eval_dir(work, stage) / f).is_file(), (stage, f)
  assert f"final StepCoder model (HF directory): `{final}`" in (work / "report.md").read_text()
  # The final model is taken as it is by `eval` and `export`.
  ev = tmp_path / "eval"
  assert (
    cli.main(
      [
        "eval",
        "--model",
        str(final),
        "--out",
        str(ev),
        "--max_problems",
        "2",
        "--gin.eval.max_new_tokens=8",
      ]
    )
    == 0
  )
  assert json.loads((ev / "eval.json").read_text())["table"]["all"]["problems"] == 2
  ex = tmp_path / "export"
  assert cli.main(["export", "--model", str(final), "--out", str(ex)]) == 0
  assert (ex / "config.json").is_file() and (ex / "tokenizer_config.json").is_file()
  card = (ex / "README.md").read_text()  # the model card knows where the demo's model came from
  assert "StepCoder (PPO + CCCS + FGO)" in card and "Started from**: " + str(work / "sft") in card
  assert "stepcoder_builtin split train" in card


@pytest.mark.slow
def test_rerun_reuses_every_finished_stage(tiny_demo):
  work, printed = tiny_demo
  rewritten = {work / "report.md", work / "report.json", work / "pass_at_1.png"}
  stamps = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file() and p not in rewritten}
  again = _run_demo(work)
  assert again == printed  # the same table from the same evaluations
  assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing evaluated or saved again


@pytest.mark.slow
def test_crash_in_the_last_evaluation_redoes_only_that_evaluation(tiny_demo):
  work, printed = tiny_demo
  kept = {
    p: p.stat().st_mtime_ns
    for d in ("sft", "eval/base", "eval/sft")
    for p in (work / d).rglob("*")
    if p.is_file()
  }
  weights = (demo.final_model_dir(work) / "model.safetensors").read_bytes()
  redo = demo.eval_dir(work, "stepcoder")
  (redo / "DONE.json").unlink()  # as if killed while evaluating the StepCoder policy
  before = (redo / "eval.json").stat().st_mtime_ns
  again = _run_demo(work)
  assert again == printed
  assert (redo / "DONE.json").is_file() and (redo / "eval.json").stat().st_mtime_ns > before
  assert {p: p.stat().st_mtime_ns for p in kept} == kept  # base, SFT: nothing rewritten
  # Training resumed from its last checkpoint (nothing left to train): the same final policy.
  assert (demo.final_model_dir(work) / "model.safetensors").read_bytes() == weights
