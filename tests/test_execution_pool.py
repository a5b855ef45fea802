"""ExecutionPool: outcomes, rewards, judges (stdio/call/assert), coverage lines, lifecycle."""

import os
import time

import pytest

from execution_helpers import SQUARE, call, cfg, he, job, mbpp, stdio
from stepcoder_jax.execution import ExecutionPool


@pytest.fixture(scope="module")
def pool():
  with ExecutionPool(cfg()) as p:
    yield p


def test_outcomes_and_rewards(pool):
  jobs = [
    job(SQUARE, "def f(x):\n  return x * x\n"),
    job(SQUARE, "def f(x):\n  return None\n"),
    job(SQUARE, "def f(x) return x\n"),
    job(SQUARE, "def f(x):\n  raise ValueError('boom')\n"),
    job(SQUARE, "def f(x):\n  while True:\n    pass\n"),
  ]
  t0 = time.perf_counter()
  res = pool.run(jobs)
  took = time.perf_counter() - t0
  assert [r.outcome for r in res] == [
    "passed",
    "failed",
    "compile_error",
    "runtime_error",
    "timeout",
  ]
  assert [r.reward for r in res] == [1.0, -0.3, -1.0, -0.6, -0.6]
  assert "ValueError: boom" in res[3].error and "program line 2" in res[3].error
  assert res[4].duration_s < 2.0 + 1.0  # the test limit + 1 s
  assert took < 10
  assert res[0].tests_passed == res[0].tests_total == 1


def test_mbpp_asserts_count_separately(pool):
  p = mbpp("add", ["assert add(1, 2) == 3", "assert add(2, 2) == 5", "assert add(0, 0) == 0"])
  (r,) = pool.run([job(p, "def add(a, b):\n  return a + b\n")])
  assert (r.outcome, r.tests_passed, r.tests_total) == ("failed", 2, 3)


def test_stdio_and_call_judges(pool):
  s = stdio(["1 2\n", "5 3\n"], ["2\n", "5"])
  c = call("twice", [[1], [[1, 2]]], [[2], [[1, 2, 1, 2]]])
  sol = (
    "class Solution:\n  def twice(self, x):\n    return x * 2 if isinstance(x, int) "
    "else tuple(x + x)\n"
  )
  res = pool.run(
    [
      job(s, "a, b = map(int, input().split())\nprint(max(a, b))\n"),
      job(s, "import sys\na, b = map(int, sys.stdin.read().split())\nprint(a)\n"),
      job(s, "import sys\nprint(max(map(int, open(0).read().split())))\nsys.exit(0)\n"),
      job(c, sol),
      job(c, "def twice(x):\n  return [x]\n"),
    ]
  )
  assert [r.outcome for r in res] == ["passed", "failed", "passed", "passed", "failed"]
  assert res[1].tests_passed == 1 and res[4].tests_passed == 0


def test_results_in_input_order_and_async(pool):
  probs = [
    he("f", f"def check(candidate):\n  assert candidate() == {k}\n", pid=f"p{k}") for k in range(12)
  ]
  jobs = [job(p, f"def f():\n  return {k if k % 3 else -1}\n") for k, p in enumerate(probs)]
  fut = pool.submit(jobs)
  res = fut.result(timeout=900)
  assert [r.passed for r in res] == [k % 3 != 0 for k in range(12)]
  assert pool.run([]) == []


def test_coverage_else_branch_executable_not_executed(pool):
  p = he("f", "def check(candidate):\n  assert candidate(5) == 1\n")
  completion = (
    "def f(x):\n"  # 1
    "  if x > 0:\n"  # 2
    "    y = 1\n"  # 3
    "  elif x < -10:\n"  # 4
    "    y = (2 +\n"  # 5
    "         3)\n"  # 6
    "  else:\n"  # 7  (no code)
    "    y = 0\n"  # 8
    "  return y\n"
  )  # 9
  (r,) = pool.run([job(p, completion)])
  assert r.outcome == "passed"
  assert r.executable_lines == [1, 2, 3, 4, 5, 6, 8, 9]
  assert r.executed_lines == [1, 2, 3, 9]


def test_coverage_in_completion_coordinates_with_prefix(pool):
  prefix = 'def f(x):\n  """Doc\n  string."""\n'
  completion = (
    "  total = sum(\n      [i for i in range(x)])\n  if total < 0:\n    return -1\n  return total\n"
  )
  p = he("f", "def check(candidate):\n  assert candidate(3) == 3\n")
  (r,) = pool.run([job(p, completion, prefix=prefix)])
  assert r.outcome == "passed"
  assert r.executable_lines == [1, 2, 3, 4, 5]
  assert r.executed_lines == [1, 2, 3, 5]
  assert r.prefix_executed_lines == [1]  # the def line; the docstring is not executable


def test_coverage_decorators_comprehensions_loops(pool):
  completion = (
    "import functools\n"  # 1
    "@functools.lru_cache(\n"  # 2
    "    maxsize=None)\n"  # 3
    "def f(n):\n"  # 4
    "  global _unused\n"  # 5  not executable
    "  out = [k * k for k in range(n)\n"  # 6
    "         if k % 2]\n"  # 7
    "  for v in out:\n"  # 8
    "    if v > 10 ** 9:\n"  # 9
    "      break\n"  # 10
    "  try:\n"  # 11
    "    z = 1 // (n - 100)\n"  # 12
    "  except ZeroDivisionError:\n"  # 13
    "    z = 0\n"  # 14
    "  return sum(out) + z * 0\n"
  )  # 15
  p = he("f", "def check(candidate):\n  assert candidate(4) == 10\n")
  (r,) = pool.run([job(p, completion)])
  assert r.outcome == "passed", r.error
  assert 5 not in r.executable_lines and 7 in r.executable_lines
  assert set(r.executable_lines) - set(r.executed_lines) == {10, 13, 14}


def test_coverage_off_reports_no_lines():
  with ExecutionPool(cfg(coverage=False, workers=1)) as p:
    (r,) = p.run([job(SQUARE, "def f(x):\n  return x * x\n")])
  assert r.outcome == "passed" and r.executed_lines == [] and r.executable_lines == []


def test_stop_at_first_failure():
  p = mbpp("g", ["assert g(1) == 0", "assert g(2) == 2", "assert g(3) == 3"])
  with ExecutionPool(cfg(stop_at_first_failure=True, workers=1)) as pl:
    (r,) = pl.run([job(p, "def g(x):\n  return x\n")])
  assert r.outcome == "failed" and r.tests_passed == 0 and r.tests_total == 3


def test_stdio_main_in_a_thread_is_joined(pool):
  """APPS solutions often run main() in a thread (for its stack size) and never join it."""
  p = stdio(["21\n"], ["42\n"], pid="t/thread")
  prog = (
    "import threading\ndef main():\n  print(int(input()) * 2)\n"
    "threading.stack_size(1 << 22)\nthreading.Thread(target=main).start()\n"
  )
  (r,) = pool.run([job(p, prog)])
  assert r.passed, r.error


def test_program_writing_junk_into_the_probe_list_is_judged_normally(pool):
  """The coverage probes are a list the program can reach: junk in it must not run in the
  harness (B.__bool__ would abort it) nor change the verdict."""
  prog = (
    "class B:\n  def __bool__(self):\n    raise SystemExit(1)\n"
    "__cov__[0] = B()\n__cov__.append(B())\n"
    "def f(x):\n  return x * x\n"
  )
  (r,) = pool.run([job(SQUARE, prog)])
  assert r.passed, r.error
  assert 6 in r.executed_lines and 7 in r.executed_lines


def test_program_too_long_is_a_compile_error(pool):
  prog = "def f(x):\n  return x * x\n" + "#" * (1 << 20)
  (r,) = pool.run([job(SQUARE, prog)])
  assert r.outcome == "compile_error" and "program too long" in r.error


def test_worker_replaced_when_its_zygote_dies(pool):
  """A worker whose fork server is gone exits; the pool replaces it and retries the job."""
  w = pool.worker_pids[0]
  (zygote,) = _children(w)
  os.kill(zygote, 9)
  res = pool.run([job(SQUARE, "def f(x):\n  return x * x\n") for _ in range(6)])
  assert all(r.passed for r in res)
  assert pool.replaced >= 1 and w not in pool.worker_pids


def test_killing_a_worker_leaves_no_program_running():
  """Worker -> zygote -> program all go: each dies with its parent (PR_SET_PDEATHSIG)."""
  with ExecutionPool(cfg(workers=1, timeout_s=2.0, program_timeout_s=3.0)) as p:
    fut = p.submit([job(SQUARE, "import time\ndef f(x):\n  time.sleep(60)\n")])
    w = p.worker_pids[0]
    (zygote,) = _children(w)
    # Wait for the program to be forked (a hang guard, not a timing check).
    deadline = time.monotonic() + 600
    while not (programs := _children(zygote)) and time.monotonic() < deadline:
      time.sleep(0.02)
    assert programs
    os.kill(w, 9)
    deadline = time.monotonic() + 600
    while (
      any(os.path.exists(f"/proc/{x}") and _state(x) != "Z" for x in programs + [zygote])
      and time.monotonic() < deadline
    ):
      time.sleep(0.05)
    assert not [x for x in programs + [zygote] if os.path.exists(f"/proc/{x}") and _state(x) != "Z"]
    (r,) = fut.result()  # retried on the replacement worker, where it times out (2 s)
    assert r.outcome == "timeout"


def _state(pid: int) -> str:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0]
  except OSError:
    return "gone"


def test_worker_replaced_after_being_killed(pool):
  before = list(pool.worker_pids)
  os.kill(before[0], 9)
  res = pool.run([job(SQUARE, "def f(x):\n  return x * x\n") for _ in range(6)])
  assert all(r.passed for r in res)
  assert pool.replaced >= 1 and pool.worker_pids[0] != before[0]


def _fd_count(pid: int) -> int:
  return len(os.listdir(f"/proc/{pid}/fd"))


def _children(pid: int, state: str | None = None) -> list[int]:
  """Children of pid (only those in ``state``, e.g. "Z" for zombies, when given)."""
  out = []
  for d in os.listdir("/proc"):
    if d.isdigit():
      try:
        with open(f"/proc/{d}/stat") as f:
          fields = f.read().rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and state in (None, fields[0]):
          out.append(int(d))
      except OSError:
        pass
  return out


def _rss_kb(pid: int) -> int:
  with open(f"/proc/{pid}/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1])
  return 0


def test_no_zombies_fd_leaks_or_growth_over_many_programs():
  jobs = [
    job(SQUARE, "def f(x):\n  return x * x\n" if k % 4 else "def f(x):\n  1/0\n")
    for k in range(400)
  ]
  with ExecutionPool(cfg(workers=2)) as p:
    p.run(jobs[:50])
    w = p.worker_pids
    fds = [_fd_count(x) for x in w]
    rss = [_rss_kb(x) for x in w]
    res = p.run(jobs)
    assert sum(r.passed for r in res) == 300
    time.sleep(0.2)
    # A leak would add hundreds; the pre-forked child's pipes come and go (+-3).
    assert all(_fd_count(x) <= n + 3 for x, n in zip(w, fds))
    for x in w:  # a worker's one child is its zygote, which forks and reaps the programs
      zygotes = _children(x)
      assert len(zygotes) == 1 and not _children(x, "Z")
      # at most the current pre-forked child and one being reaped; no zombies
      assert len(_children(zygotes[0])) <= 2 and not _children(zygotes[0], "Z")
    assert all(_rss_kb(x) < r + 4096 for x, r in zip(w, rss))


def test_execution_package_imports_no_jax():
  import subprocess
  import sys

  code = (
    "import sys, stepcoder_jax.execution.pool, stepcoder_jax.execution.worker, "
    "stepcoder_jax.commands.judge\n"
    "assert not [m for m in sys.modules if m == 'jax' or m.startswith('jax.')]\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True, timeout=900)
