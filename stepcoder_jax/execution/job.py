"""What the pool is given (Job) and what it returns (ExecResult); see docs/CONTRACTS.md."""

from __future__ import annotations

import dataclasses

from stepcoder_jax.data.record import Problem


@dataclasses.dataclass
class Job:
  """One program to judge: ``prefix + completion`` against ``problem``'s tests.

  ``prefix`` is given (starter code or a CCCS prefix) and never trained on, so its lines are
  reported apart from the completion's.
  """

  problem: Problem
  completion: str
  prefix: str = ""

  @property
  def program(self) -> str:
    return self.prefix + self.completion


@dataclasses.dataclass
class ExecResult:
  """The verdict on one program.

  Line numbers are 1-based in the completion's own coordinates: line 1 is the program line that
  holds the completion's first character. ``prefix_executed_lines`` are in the prefix's (= the
  program's) coordinates and only count lines wholly before the completion.

  ``coverage_state`` says what the lines mean for FGO. ``"measured"``: the program ran under
  coverage and reported it (up to a kill, see ``harness``), so an empty ``executed_lines`` means
  the completion was never reached. ``"none"``: nothing was measured (a compile error, coverage
  off, or a hard kill before the first report), so the lines say nothing about dead code.
  ``warnings``: what Python's parser and compiler warned about the program (SyntaxWarning,
  invalid escapes), at most ``harness.MAX_WARNINGS``; recorded here instead of printed.
  ``test_verdicts``: one entry per test, in the problem's order: ``"pass"``, ``"fail"`` (wrong
  answer), ``"error"`` (raised or killed), ``"timeout"`` or ``"not_run"`` (the program did not
  compile, or the run stopped before the test). ``reward`` is the CodeRL value of the outcome,
  or what the gin ``reward.fn`` plug-in returned (``execution/reward.py``).
  """

  outcome: str
  reward: float
  tests_passed: int
  tests_total: int
  executed_lines: list[int] = dataclasses.field(default_factory=list)
  executable_lines: list[int] = dataclasses.field(default_factory=list)
  prefix_executed_lines: list[int] = dataclasses.field(default_factory=list)
  error: str = ""
  duration_s: float = 0.0
  coverage_state: str = "none"
  warnings: list[str] = dataclasses.field(default_factory=list)
  test_verdicts: list[str] = dataclasses.field(default_factory=list)

  @property
  def passed(self) -> bool:
    return self.outcome == "passed"

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def count_tests(problem: Problem) -> int:
  """Tests of a problem as the judge counts them (see Problem.num_tests)."""
  return problem.num_tests


def job_message(job: Job) -> dict:
  """What the pool sends a worker (expected outputs included: the worker keeps them)."""
  p = job.problem
  msg = {"kind": p.test_kind, "program": job.program, "n_tests": count_tests(p)}
  if p.test_kind == "assert":
    msg.update(test_code=p.test_code, test_setup_code=p.test_setup_code, entry_point=p.entry_point)
  else:
    msg.update(inputs=p.inputs, outputs=p.outputs, fn_name=p.fn_name)
  return msg
