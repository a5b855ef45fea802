"""A program cut short (time limit, signal) keeps what its earlier tests established; coverage
says whether it was measured; compile warnings are recorded, not printed (issues 10.5, 11.5)."""

import pytest

from execution_helpers import call, cfg, he, job, mbpp, stdio
from stepcoder_jax.execution import ExecutionPool

# Test 0 (x = 0) passes, test 1 (x = 1) loops; line 7 is reached by neither.
LOOPS_ON_ONE = (
  "def f(x):\n"  # 1
  "  if x == 0:\n"  # 2
  "    return 0\n"  # 3
  "  if x == 1:\n"  # 4
  "    while True:\n"  # 5
  "      pass\n"  # 6
  "  return x + 1\n"
)  # 7


@pytest.fixture(scope="module")
def pool():
  with ExecutionPool(cfg(workers=1, timeout_s=1.0, program_timeout_s=6.0)) as p:
    yield p


def _assert_kept_test_0(r, looping_lines, unreached_line):
  assert r.outcome == "timeout", r.error
  assert r.tests_passed == 1, r.error
  assert r.error.startswith("test 1: time limit (1.0 s) exceeded"), r.error
  assert set(looping_lines) <= set(r.executed_lines), r.executed_lines
  assert unreached_line not in r.executed_lines and unreached_line in r.executable_lines
  assert r.coverage_state == "measured"


def test_call_timeout_keeps_earlier_verdicts_and_coverage(pool):
  p = call("f", [[0], [1], [2]], [0, 2, 3])
  (r,) = pool.run([job(p, LOOPS_ON_ONE)])
  _assert_kept_test_0(r, [1, 2, 3, 4, 5, 6], 7)
  assert r.duration_s < 1.0 + 1.0


def test_stdio_timeout_keeps_earlier_verdicts_and_coverage(pool):
  p = stdio(["0\n", "1\n", "2\n"], ["0\n", "2\n", "3\n"])
  prog = (
    "x = int(input())\n"  # 1
    "if x == 0:\n"  # 2
    "  print(0)\n"  # 3
    "elif x == 1:\n"  # 4
    "  while True:\n"  # 5
    "    pass\n"  # 6
    "else:\n"
    "  print(x + 1)\n"
  )  # 8
  (r,) = pool.run([job(p, prog)])
  _assert_kept_test_0(r, [1, 2, 3, 4, 5, 6], 8)


def test_assert_timeout_keeps_earlier_verdicts_and_coverage(pool):
  p = mbpp("f", ["assert f(0) == 0", "assert f(1) == 2", "assert f(2) == 3"])
  (r,) = pool.run([job(p, LOOPS_ON_ONE)])
  _assert_kept_test_0(r, [1, 2, 3, 4, 5, 6], 7)


def _run_f(pool, test_1_body: str):
  """Judge f on tests f(0) == 0, f(1) == 2, f(2) == 2: lines 1-4 pass test 0, the body (from
  line 5) is what tests 1 and 2 run."""
  prog = "import os, signal\ndef f(x):\n  if x == 0:\n    return 0\n" + test_1_body
  (r,) = pool.run([job(call("f", [[0], [1], [2]], [0, 2, 2]), prog)])
  return r


def test_timer_switched_off_by_the_program_still_times_out(pool):
  """The hard kill ends it; the verdicts already reported stay (only the killed test's coverage
  is lost)."""
  r = _run_f(pool, "  signal.signal(signal.SIGALRM, signal.SIG_IGN)\n  while True:\n    pass\n")
  assert (r.outcome, r.tests_passed) == ("timeout", 1), r.error
  assert r.error.startswith("test 1: time limit"), r.error
  assert set(r.executed_lines) == {1, 2, 3, 4}


def test_signal_kill_keeps_earlier_verdicts(pool):
  r = _run_f(pool, "  os.kill(os.getpid(), signal.SIGTERM)\n")
  assert (r.outcome, r.tests_passed) == ("runtime_error", 1), r.error
  assert r.error.startswith("test 1: program killed by signal SIGTERM"), r.error
  # Test 0's coverage is kept; what test 1 ran before the kill (line 5) is not known.
  assert set(r.executed_lines) == {1, 2, 3, 4} and r.coverage_state == "measured"


def test_alarm_the_program_sends_itself_is_not_a_time_limit(pool):
  r = _run_f(pool, "  if x == 1:\n    os.kill(os.getpid(), signal.SIGALRM)\n  return x\n")
  assert (r.outcome, r.tests_passed) == ("runtime_error", 2), r.error
  assert r.error.startswith("test 1: KeyboardInterrupt"), r.error


def test_catching_the_interrupt_past_the_limit_is_still_a_timeout(pool):
  """The right answer, returned after the program caught the timer's interrupt, is too late."""
  r = _run_f(pool, "  try:\n    while True:\n      pass\n  except BaseException:\n    return 2\n")
  assert (r.outcome, r.tests_passed) == ("timeout", 1), r.error
  assert r.error.startswith("test 1: time limit"), r.error
  assert {8, 9} <= set(r.executed_lines)


def test_coverage_state_tells_not_reached_from_not_measured(pool):
  p = he("f", "def check(candidate):\n  assert candidate(1) == 1\n")
  prefix = "def f(x):\n  if x > 0:\n    return 1\n"
  unreached, broken = pool.run([job(p, "  return 2\n", prefix), job(p, "  return (\n", prefix)])
  assert unreached.passed and unreached.executed_lines == [] and unreached.executable_lines == [1]
  assert unreached.coverage_state == "measured"
  assert broken.outcome == "compile_error" and broken.coverage_state == "none"
  with ExecutionPool(cfg(coverage=False, workers=1)) as off:
    (r,) = off.run([job(p, "  return 2\n", prefix)])
  assert r.passed and r.coverage_state == "none"


def test_compile_warnings_are_recorded_not_printed(capfd):
  p = he("f", "def check(candidate):\n  assert candidate(2) == 4\n")
  prog = "def f(x):\n  if x < 0:\n    return (1, 2)(3)\n  return x * x\n"
  with ExecutionPool(cfg(workers=1)) as fresh:
    (r,) = fresh.run([job(p, prog)])
  _, err = capfd.readouterr()
  assert r.passed, r.error
  assert "SyntaxWarning" not in err and "perhaps you missed a comma" not in err, err
  assert len(r.warnings) == 1, r.warnings
  assert "SyntaxWarning" in r.warnings[0] and "program line 3" in r.warnings[0]
