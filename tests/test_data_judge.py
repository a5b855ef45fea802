"""Records from every builder are accepted by the judge: their canonical solutions pass."""

import json
import shutil
from pathlib import Path

import pytest

from stepcoder_jax.data import load, prompts
from stepcoder_jax.execution import ExecutionConfig, ExecutionPool, Job

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def pool():
  with ExecutionPool(ExecutionConfig(workers=2, coverage=False, timeout_s=10.0)) as p:
    yield p


def _judge(pool, problems):
  results = pool.run([Job(p, p.canonical_solution) for p in problems])
  bad = [(p.id, r.outcome, r.error) for p, r in zip(problems, results) if r.outcome != "passed"]
  assert not bad
  assert all(r.tests_passed == r.tests_total >= 1 for r in results)
  # stdio/call: one test per input (HumanEval's check() counts as one test in the judge).
  assert all(
    r.tests_total == p.num_tests for p, r in zip(problems, results) if p.test_kind != "assert"
  )


def test_fixture_builds_pass_the_judge(tmp_path, pool):
  problems = []
  for fixture in ("apps_plus_stdio.json", "apps_plus_call.json"):
    manual = tmp_path / fixture / "apps_plus"
    manual.mkdir(parents=True)
    shutil.copy(FIXTURES / fixture, manual / "data.json")
    for split in ("train", "test"):
      problems += load.load_problems(
        "apps_plus", split, data_dir=str(tmp_path / fixture / "d"), manual_dir=str(manual.parent)
      )
  for split in ("train", "test"):
    problems += load.load_problems(
      "apps", split, data_dir=str(tmp_path / "a"), manual_dir=str(FIXTURES / "apps_dirs")
    )
  assert len(problems) == 10
  _judge(pool, problems)


def test_real_data_samples_pass_the_judge(tmp_path, pool):
  if not SHARED.is_dir():
    pytest.skip(f"real data {SHARED} is absent")
  d = str(tmp_path)
  problems = load.load_problems("humaneval", "test", data_dir=d, manual_dir=str(SHARED))[:6]
  problems += load.load_problems("mbpp", "test", data_dir=d, manual_dir=str(SHARED))[:6]
  # APPS: references that pass as plain programs (SOURCE.md), 3 call-based and 3 stdio.
  raw = {
    f"apps/train/{r['problem_id']}": r
    for r in map(json.loads, (SHARED / "apps" / "apps_subset.jsonl").read_text().splitlines())
  }
  ok = [
    p
    for p in load.load_problems("apps", "train", data_dir=d, manual_dir=str(SHARED))
    if raw[p.id]["reference_passes"]
    and not raw[p.id]["reference_check"]["apps_function_wrap"]
    and sum(len(s) for s in p.inputs) < 2000
  ]
  problems += [p for p in ok if p.test_kind == "call"][:3] + [
    p for p in ok if p.test_kind == "stdio"
  ][:3]
  _judge(pool, problems)


def test_prompt_code_prefix_plus_rest_of_solution_passes(pool):
  problems = load.load_problem_file(str(FIXTURES / "apps_plus_call.json"))
  jobs = []
  for p in problems:
    k = p.canonical_solution.index("\n    ") + 1  # the given prefix ends after the def line
    parts = prompts.build_prompt(p, prefix=p.canonical_solution[:k])
    jobs.append(Job(p, p.canonical_solution[k:], prefix=parts.code_prefix))
  assert [r.outcome for r in pool.run(jobs)] == ["passed"] * len(problems)
