"""`curriculum`: show each problem's CCCS curriculum, so that rho and the statement set can be
tuned by looking at it.

    stepcoder-jax curriculum --problems P.jsonl [--problem ID] [--json]
    stepcoder-jax curriculum --dataset NAME --split SPLIT [--gin.cccs.statements=branching]
    stepcoder-jax curriculum --problems P.jsonl --checkpoint RUN_DIR   # where a run is now

Per problem: the counted conditional statements (`cccs.statements`) as 1-based lines of the
canonical solution, in source order, and the stages in training order as the line where the policy
starts writing (the prompt carries the solution above it), ending with s* = 0: line 1, or the first
line after the starter code when the problem has one. With --json, one line per problem:
{"problem_id": ..., "statement_lines": [...], "stage_lines": [...]}.

With --checkpoint (a training run's work_dir or its checkpoints/), the stages are those of that
run's latest checkpoint (its cccs.statements, schedule and state), and each problem also shows
where it is now: its current stage (`current_stage`, in training order; null for a problem the run
has not registered), the verdicts on it so far (`attempts`, `passes`), how often the adaptive
schedule moved it back (`retreats`) and `written_share`, the share of the canonical solution's
characters the policy writes itself at that stage (1.0 at s* = 0).
"""

from __future__ import annotations

import json

from stepcoder_jax.errors import UserError

HELP = "print each problem's CCCS statements and stages (the lines where the policy starts)"


def add_arguments(parser) -> None:
  from stepcoder_jax.commands import add_problem_arguments

  add_problem_arguments(parser, purpose="train")
  parser.add_argument("--problem", default=None, help="show only the problem with this id")
  parser.add_argument(
    "--json", action="store_true", help="one JSON object per problem instead of text"
  )
  parser.add_argument(
    "--checkpoint",
    default=None,
    metavar="RUN_DIR",
    help="show each problem's current stage in this training run's latest checkpoint",
  )


def describe(problem, curriculum) -> dict:
  """The --json record of `problem` under `curriculum` (a `cccs.Curriculum`)."""
  from stepcoder_jax.data import prompts as prompts_lib

  solution = problem.canonical_solution
  stages = curriculum.register(problem).num_stages
  starts = [
    prompts_lib.code_prefix_for(problem, curriculum.prefix_at(problem, k)) for k in range(stages)
  ]
  return {
    "problem_id": problem.id,
    "statement_lines": [solution.count("\n", 0, s) + 1 for s, _ in curriculum.statements(problem)],
    "stage_lines": [code.count("\n") + 1 for code in starts],
  }


def current(problem, curriculum) -> dict:
  """Where `problem` is in `curriculum`'s state (the --checkpoint fields of its record)."""
  st = curriculum.states.get(problem.id)
  if st is None:
    return {"current_stage": None}
  return {
    "current_stage": st.stage,
    "attempts": st.attempts,
    "passes": st.passes,
    "retreats": st.retreats,
    "written_share": round(curriculum.written_share(problem), 4),
  }


def read_state(path: str):
  """(curriculum, meta) of the latest checkpoint of the training run at `path`."""
  from stepcoder_jax import checkpoint as ckpt_lib
  from stepcoder_jax.config import CheckpointConfig
  from stepcoder_jax.rl.cccs import Curriculum
  from stepcoder_jax.rl.config import CCCSConfig

  directory = ckpt_lib.find_checkpoint_dir(path)
  with ckpt_lib.Checkpointer(directory, CheckpointConfig(max_to_keep=0, async_save=False)) as ck:
    if ck.latest_step() is None:
      raise UserError(f"{path}: no finished checkpoint yet")
    meta = ck.read_meta()
  if "curriculum" not in meta:
    raise UserError(f"{path}: its checkpoint holds no curriculum state")
  saved = json.loads(meta["curriculum"])
  cfg = CCCSConfig(
    enabled=saved.get("enabled", True),
    statements=saved.get("statements", "if"),
    schedule=saved.get("schedule", "paper"),
  )
  return Curriculum.from_json(meta["curriculum"], cfg), meta


def _text(rec: dict, statements: str) -> str:
  lines = rec["statement_lines"]
  stages = ", ".join(f"line {n}" for n in rec["stage_lines"][:-1])
  out = (
    f"{rec['problem_id']}: E = {len(lines)} ({statements}) at lines "
    f"{', '.join(map(str, lines)) or '-'}\n"
    f"  stages in training order: {stages + ', ' if stages else ''}"
    f"line {rec['stage_lines'][-1]} (s* = 0, the question alone)"
  )
  if "current_stage" in rec:
    k = rec["current_stage"]
    out += (
      "\n  now: not seen by the run"
      if k is None
      else f"\n  now: stage {k} (the policy writes from line {rec['stage_lines'][k]}, "
      f"{rec['written_share']:.0%} of the solution); {rec['passes']}/{rec['attempts']} "
      f"passed there; moved back {rec['retreats']} time(s)"
    )
  return out


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
      raise UserError(
        f"{args.problems or args.dataset or 'dataset'}: no problem with id {args.problem!r}"
      )
  if args.checkpoint:
    curriculum, meta = read_state(args.checkpoint)
    cfg = curriculum.cfg
    if not args.json:
      print(
        f"{args.checkpoint}: iteration {meta.get('iteration')}, cccs.schedule = {cfg.schedule!r}"
      )
  else:
    cfg = CCCSConfig()
    curriculum = Curriculum(cfg)
  for p in problems:
    seen = p.id in curriculum.states
    rec = describe(p, curriculum)
    if args.checkpoint:
      if not seen:  # describe registered it: not the run's state
        del curriculum.states[p.id]
      rec.update(current(p, curriculum))
    print(json.dumps(rec) if args.json else _text(rec, cfg.statements))
  return 0
