"""`judge`: run completions (or the reference solutions) against their problems' unit tests.

    stepcoder-jax judge --problems P --completions C.jsonl --out R.jsonl
                        [--workers N] [--timeout S] [--use_canonical] [--bad_lines error|skip]

P is a JSONL of problem records, or a HumanEval .jsonl(.gz) / MBPP .jsonl / APPS file as published
(auto-detected by stepcoder_jax.data.load). Completions are {"problem_id", "completion"} lines
(optionally "prefix": the given code the completion continues; by default a HumanEval problem's
prompt, else nothing). Results are written one line per completion, in input order.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time

from stepcoder_jax.errors import UserError

HELP = "judge completions (or reference solutions) against unit tests in the sandboxed pool"

# coverage_state: 'measured' (executed_lines is what ran; an empty list means the program never
# reached the completion) or 'none' (no coverage: FGO masks every token in).
RESULT_FIELDS = (
  "problem_id",
  "outcome",
  "reward",
  "tests_passed",
  "tests_total",
  "executed_lines",
  "executable_lines",
  "coverage_state",
  "error",
  "duration_s",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from stepcoder_jax.data.load import add_dataset_arguments  # light: no TFDS import here

  parser.add_argument(
    "--problems",
    default=None,
    help="problem file: our JSONL, HumanEval .jsonl(.gz), MBPP .jsonl, APPS; "
    "or name a TFDS dataset with --dataset/--split",
  )
  add_dataset_arguments(parser)
  parser.add_argument(
    "--completions", default=None, help='JSONL of {"problem_id", "completion"[, "prefix"]} lines'
  )
  parser.add_argument("--out", required=True, help="where to write the results (JSONL)")
  parser.add_argument(
    "--workers",
    type=int,
    default=None,
    help="worker processes (default: gin execution.workers, 0 = CPU count)",
  )
  parser.add_argument(
    "--timeout",
    type=float,
    default=None,
    help="time limit of one test in seconds (default: gin execution.timeout_s)",
  )
  parser.add_argument(
    "--use_canonical",
    "--use-canonical",
    action="store_true",
    help="judge the problems' own reference solutions instead of completions",
  )
  parser.add_argument(
    "--bad_lines",
    "--bad-lines",
    choices=("error", "skip"),
    default="error",
    help="a malformed completion line stops the run (error) or is reported and skipped (skip)",
  )


def default_prefix(problem) -> str:
  """The code a completion continues: a HumanEval prompt (the model writes the body)."""
  return problem.starter_code if problem.source == "humaneval" else ""


def canonical_job(problem):
  from stepcoder_jax.execution import Job  # pylint: disable=import-outside-toplevel

  prefix = default_prefix(problem)
  sol = problem.canonical_solution
  if prefix and sol.startswith(prefix):
    return Job(problem, sol[len(prefix) :], prefix=prefix)
  return Job(problem, sol)


def read_completions(path: str, problems: dict, bad_lines: str):
  """(line number, Job) for every valid line; malformed lines name file and line number."""
  from stepcoder_jax.execution import Job  # pylint: disable=import-outside-toplevel

  jobs, skipped = [], 0
  try:
    f = open(path, encoding="utf-8")
  except OSError as e:
    raise UserError(f"{path}: cannot read completions ({e.strerror})") from None
  with f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      why = None
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        rec, why = None, f"not valid JSON ({e.msg})"
      if why is None and not isinstance(rec, dict):
        why = f"expected a JSON object, got {type(rec).__name__}"
      if why is None:
        pid, comp = rec.get("problem_id"), rec.get("completion")
        if not isinstance(pid, (str, int)) or isinstance(pid, bool):
          why = "field 'problem_id' is missing or not a string"
        elif str(pid) not in problems:
          why = f"field 'problem_id' is {pid!r}, which is not in the problem file"
        elif not isinstance(comp, str):
          why = "field 'completion' is missing or not a string"
        elif "prefix" in rec and not isinstance(rec["prefix"], str):
          why = "field 'prefix' is not a string"
      if why is not None:
        msg = f"{path}:{n}: {why}"
        if bad_lines == "error":
          raise UserError(msg + " (use --bad_lines skip to skip such lines)")
        print(f"warning: skipped {msg}", file=sys.stderr)
        skipped += 1
        continue
      problem = problems[str(pid)]
      prefix = rec.get("prefix", default_prefix(problem))
      jobs.append((n, Job(problem, comp, prefix=prefix)))
  return jobs, skipped


def run(args) -> int:
  from stepcoder_jax.data.load import problems_from_args  # pylint: disable=import-outside-toplevel
  from stepcoder_jax.execution import (  # pylint: disable=import-outside-toplevel
    ExecutionConfig,
    ExecutionPool,
    RewardConfig,
  )

  if args.problems and args.dataset:
    raise UserError("give either --problems FILE or --dataset NAME [--split SPLIT], not both")
  problems = problems_from_args(args)
  source = args.problems or f"dataset {args.dataset or 'stepcoder_builtin'}"
  by_id = {p.id: p for p in problems}
  if len(by_id) != len(problems):
    dup = [k for k, c in collections.Counter(p.id for p in problems).items() if c > 1][:3]
    raise UserError(f"{source}: duplicate problem ids {dup}")
  if args.use_canonical:
    if args.completions:
      raise UserError("--use_canonical judges the reference solutions: drop --completions")
    missing = [p.id for p in problems if not p.canonical_solution.strip()]
    if missing:
      print(
        f"warning: {len(missing)} problem(s) have no reference solution and are skipped "
        f"(first: {missing[0]})",
        file=sys.stderr,
      )
    jobs = [(None, canonical_job(p)) for p in problems if p.canonical_solution.strip()]
    skipped = len(missing)
  else:
    if not args.completions:
      raise UserError("judge needs --completions FILE (or --use_canonical)")
    jobs, skipped = read_completions(args.completions, by_id, args.bad_lines)
  if not jobs:
    what = "reference solutions" if args.use_canonical else f"completions in {args.completions}"
    raise UserError(f"judge: no {what} to judge ({skipped} skipped)")

  cfg = ExecutionConfig()
  if args.workers is not None:
    if args.workers < 0:
      raise UserError(f"--workers must be >= 0, got {args.workers}")
    cfg.workers = args.workers
  if args.timeout is not None:
    if args.timeout <= 0:
      raise UserError(f"--timeout must be > 0, got {args.timeout}")
    cfg.timeout_s = args.timeout
    cfg.program_timeout_s = max(cfg.program_timeout_s, args.timeout + 1.0)
  try:
    out = open(args.out, "w", encoding="utf-8")
  except OSError as e:
    raise UserError(f"{args.out}: cannot write results ({e.strerror})") from None

  t0 = time.perf_counter()
  with ExecutionPool(cfg, RewardConfig()) as pool, out:
    results = pool.run([job for _, job in jobs])
    for (_, job), res in zip(jobs, results):
      d = res.to_dict()
      d["problem_id"] = job.problem.id
      out.write(json.dumps({k: d[k] for k in RESULT_FIELDS}) + "\n")
  dt = time.perf_counter() - t0

  counts = collections.Counter(r.outcome for r in results)
  order = ("passed", "failed", "runtime_error", "timeout", "compile_error")
  summary = ", ".join(f"{k} {counts.get(k, 0)}" for k in order)
  rate = len(results) / dt if dt > 0 else 0.0
  print(
    f"judged {len(results)} program(s) with {pool.num_workers} worker(s) in {dt:.1f} s "
    f"({rate:.1f} programs/s): {summary}" + (f"; skipped {skipped} line(s)" if skipped else "")
  )
  print(f"results: {args.out}")
  return 0
