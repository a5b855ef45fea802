"""`curriculum`: show each problem's CCCS curriculum, so that rho and the statement set can be
tuned by looking at it.

    stepcoder-jax curriculum --problems P.jsonl [--problem ID] [--json]
    stepcoder-jax curriculum --dataset NAME --split SPLIT [--gin.cccs.statements=branching]

Per problem: the counted conditional statements (`cccs.statements`) as 1-based lines of the
canonical solution, in source order, and the stages in training order as the line where the policy
starts writing (the prompt carries the solution above it), ending with s* = 0: line 1, or the first
line after the starter code when the problem has one. With --json, one line per problem:
{"problem_id": ..., "statement_lines": [...], "stage_lines": [...]}.
"""
from __future__ import annotations

import json

from stepcoder_jax.errors import UserError

HELP = "print each problem's CCCS statements and stages (the lines where the policy starts)"


def add_arguments(parser) -> None:
  from stepcoder_jax.commands import add_problem_arguments
  add_problem_arguments(parser, purpose="train")
  parser.add_argument("--problem", default=None, help="show only the problem with this id")
  parser.add_argument("--json", action="store_true",
                      help="one JSON object per problem instead of text")


def describe(problem, curriculum) -> dict:
  """The --json record of `problem` under `curriculum` (a `cccs.Curriculum`)."""
  from stepcoder_jax.data import prompts as prompts_lib

  solution = problem.canonical_solution
  stages = curriculum.register(problem).num_stages
  starts = [prompts_lib.code_prefix_for(problem, curriculum.prefix_at(problem, k))
            for k in range(stages)]
  return {"problem_id": problem.id,
          "statement_lines": [solution.count("\n", 0, s) + 1
                              for s, _ in curriculum.statements(problem)],
          "stage_lines": [code.count("\n") + 1 for code in starts]}


def _text(rec: dict, statements: str) -> str:
  lines = rec["statement_lines"]
  stages = ", ".join(f"line {n}" for n in rec["stage_lines"][:-1])
  return (f"{rec['problem_id']}: E = {len(lines)} ({statements}) at lines "
          f"{', '.join(map(str, lines)) or '-'}\n"
          f"  stages in training order: {stages + ', ' if stages else ''}"
          f"line {rec['stage_lines'][-1]} (s* = 0, the question alone)")


def run(args) -> int:
  from stepcoder_jax.data.load import problems_from_args
  from stepcoder_jax.rl.cccs import Curriculum
  from stepcoder_jax.rl.config import CCCSConfig

  if args.problems and args.dataset:
    raise UserError("give either --problems FILE or --dataset NAME [--split SPLIT], not both")
  problems = problems_from_args(args, purpose="train")
  if args.problem is not None:
    problems = [p for p in problems if p.id == args.problem]
    if not problems:
      raise UserError(f"{args.problems or args.dataset or 'dataset'}: no problem with id "
                      f"{args.problem!r}")
  cfg = CCCSConfig()
  curriculum = Curriculum(cfg)
  for p in problems:
    rec = describe(p, curriculum)
    print(json.dumps(rec) if args.json else _text(rec, cfg.statements))
  return 0
