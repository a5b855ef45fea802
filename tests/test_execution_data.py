"""Reference solutions of the real datasets pass at their recorded rates (../shared/data).

HumanEval: all 164 (humaneval/SOURCE.md). MBPP: 971 of 974, the three failures being 341, 596 and
642 (set order and sys.getsizeof on this Python; mbpp/SOURCE.md). APPS subset: SOURCE.md records
101 of 107 passing with solutions[0]; the converter takes the first passing solution of the first
10 for the other six, so all 107 must pass here.
"""

import collections
from pathlib import Path

import pytest

from stepcoder_jax.commands.judge import canonical_job
from stepcoder_jax.data.load import load_problem_file
from stepcoder_jax.execution import ExecutionConfig, ExecutionPool

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _load(rel: str):
  path = DATA / rel
  if not path.exists():
    pytest.skip(f"{path} is absent (the shared data folder is not next to the repo)")
  return load_problem_file(str(path))


def _judge(problems, **kw):
  cfg = ExecutionConfig(workers=2, **kw)
  with ExecutionPool(cfg) as pool:
    return pool.run([canonical_job(p) for p in problems])


def test_humaneval_all_canonical_solutions_pass_with_coverage():
  problems = _load("humaneval/HumanEval.jsonl.gz")
  assert len(problems) == 164
  res = _judge(problems, timeout_s=20.0)
  failed = {p.id: r.error for p, r in zip(problems, res) if not r.passed}
  assert not failed
  # The body (completion) is measured in its own coordinates; most of it runs.
  assert all(r.executable_lines and r.executable_lines[0] >= 1 for r in res)
  assert sum(len(r.executed_lines) for r in res) > 0.9 * sum(len(r.executable_lines) for r in res)


@pytest.mark.slow
def test_mbpp_reference_pass_rate():
  problems = _load("mbpp/mbpp.jsonl")
  assert len(problems) == 974
  res = _judge(problems, timeout_s=30.0, program_timeout_s=60.0)
  failed = sorted(p.id for p, r in zip(problems, res) if not r.passed)
  assert failed == ["mbpp/341", "mbpp/596", "mbpp/642"], {
    p.id: (r.outcome, r.error[:200]) for p, r in zip(problems, res) if not r.passed
  }


def test_apps_subset_reference_pass_rate():
  problems = _load("apps/apps_subset.jsonl")
  res = _judge(problems, timeout_s=20.0)  # numpy is imported on demand, by default
  outcomes = collections.Counter(r.outcome for r in res)
  assert outcomes["passed"] >= 101, outcomes
  assert outcomes["passed"] == len(problems), {
    p.id: (r.outcome, r.error[:200]) for p, r in zip(problems, res) if not r.passed
  }
