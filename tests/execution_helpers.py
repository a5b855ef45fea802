"""Shared helpers for the execution tests (not a test module)."""

from stepcoder_jax.data.record import Problem
from stepcoder_jax.execution import ExecutionConfig, Job

FAST = dict(workers=2, timeout_s=2.0, program_timeout_s=8.0, memory_mb=512, coverage=True)


def cfg(**kw) -> ExecutionConfig:
  return ExecutionConfig(**{**FAST, **kw})


def he(entry: str, check: str, pid: str = "t/he") -> Problem:
  """A HumanEval-style problem: test_code defines check(candidate)."""
  return Problem(
    id=pid, question="", test_kind="assert", test_code=check, entry_point=entry, source="humaneval"
  )


def mbpp(entry: str, asserts: list[str], setup: str = "", pid: str = "t/mbpp") -> Problem:
  return Problem(
    id=pid,
    question="",
    test_kind="assert",
    test_code="\n".join(asserts),
    test_setup_code=setup,
    entry_point=entry,
    source="mbpp",
  )


def stdio(inputs: list[str], outputs: list[str], pid: str = "t/stdio") -> Problem:
  return Problem(id=pid, question="", test_kind="stdio", inputs=inputs, outputs=outputs)


def call(fn: str, inputs: list, outputs: list, pid: str = "t/call") -> Problem:
  return Problem(id=pid, question="", test_kind="call", fn_name=fn, inputs=inputs, outputs=outputs)


SQUARE = he("f", "def check(candidate):\n  assert candidate(2) == 4\n  assert candidate(3) == 9\n")


def job(problem: Problem, completion: str, prefix: str = "") -> Job:
  return Job(problem, completion, prefix)
