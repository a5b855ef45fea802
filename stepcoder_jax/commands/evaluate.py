"""`stepcoder-jax eval`: pass@k (unbiased, n samples) and greedy pass@1 by difficulty.

    stepcoder-jax eval --model runs/sft --dataset stepcoder_builtin --split test --out runs/eval \
        [--n 10 --k 1,5 --temperature 0.8] [--gin.eval.max_new_tokens=256]

Writes eval.md, eval.json and eval_samples.jsonl to --out and prints the markdown table (pass@k,
greedy pass@1 and the share of unit tests passed). With --subtask, also the last-start-point CCCS
subtask (greedy; problems without a curriculum under gin cccs.statements excluded):
eval_subtask.md, eval_subtask.json, eval_subtask_samples.jsonl (layout: runs/evaluation.py).
A killed evaluation resumes when rerun with the same --out, model and settings: the sampler
batches it finished are replayed from eval.journal.jsonl (runs/eval_journal.py), not resampled.
"""

from __future__ import annotations

HELP = "pass@k and greedy pass@1 by difficulty; writes markdown + JSON tables"


def _ks(text: str) -> tuple[int, ...]:
  import argparse

  try:
    ks = tuple(int(k) for k in text.split(",") if k.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(
      f"--k: expected comma-separated integers, got {text!r}"
    ) from None
  if not ks or min(ks) < 1:
    raise argparse.ArgumentTypeError(f"--k: expected positive integers, got {text!r}")
  return ks


def add_arguments(parser) -> None:
  from stepcoder_jax.commands import add_model_argument, add_problem_arguments

  add_model_argument(parser)
  add_problem_arguments(parser)
  parser.add_argument("--out", required=True, help="output directory for the tables")
  parser.add_argument(
    "--n", type=int, default=None, help="samples per problem (gin eval.num_samples)"
  )
  parser.add_argument("--k", type=_ks, default=None, help="comma-separated ks (gin eval.ks)")
  parser.add_argument(
    "--temperature", type=float, default=None, help="0 = greedy (gin eval.temperature)"
  )
  parser.add_argument("--max_problems", type=int, default=None, help="gin eval.max_problems")
  parser.add_argument(
    "--subtask",
    action="store_true",
    help="also evaluate the subtask from the last CCCS start point (writes eval_subtask.*)",
  )


def run(args) -> int:
  import dataclasses

  from stepcoder_jax.data import load
  from stepcoder_jax.errors import UserError
  from stepcoder_jax.execution.config import ExecutionConfig
  from stepcoder_jax.runs.config import EvalConfig

  cfg = EvalConfig()
  flags = {
    "num_samples": args.n,
    "ks": args.k,
    "temperature": args.temperature,
    "max_problems": args.max_problems,
  }
  cfg = dataclasses.replace(cfg, **{k: v for k, v in flags.items() if v is not None})
  if cfg.num_samples < 1:
    raise UserError(f"eval: --n / eval.num_samples must be >= 1, got {cfg.num_samples}")
  if cfg.temperature < 0:
    raise UserError(f"eval: --temperature / eval.temperature must be >= 0, got {cfg.temperature}")
  big_k = max(int(k) for k in cfg.ks)
  if cfg.temperature == 0 and (cfg.num_samples > 1 or big_k > 1):
    raise UserError(
      f"eval: --n {cfg.num_samples} / --k {','.join(map(str, cfg.ks))} at "
      "temperature 0: greedy decoding gives one sample per problem; pass "
      "--temperature > 0 for pass@k, or --n 1 --k 1"
    )
  if big_k > cfg.num_samples:
    raise UserError(
      f"eval: pass@{big_k} needs at least {big_k} samples per problem, --n / "
      f"eval.num_samples is {cfg.num_samples}"
    )
  if args.split is None and not args.problems:
    args.split = cfg.split
  problems = load.problems_from_args(args, purpose="eval")  # cheap failures before the model
  if not problems:
    raise UserError("eval: the dataset split has no problems")

  from stepcoder_jax import gin_setup
  from stepcoder_jax.runs import evaluation, pipeline

  models = pipeline.load_policy(args.model)  # gin model.* gives the default path and dtypes
  sub = None
  with pipeline.open_pool(ExecutionConfig()) as pool:
    report = evaluation.evaluate(
      models.policy,
      models.tokenizer,
      problems,
      cfg,
      pool,
      out_dir=args.out,
      progress=True,
      resume=True,
    )
    if args.subtask:
      from stepcoder_jax.rl.config import CCCSConfig

      sub = evaluation.evaluate(
        models.policy,
        models.tokenizer,
        problems,
        cfg,
        pool,
        out_dir=args.out,
        name="eval_subtask",
        progress=True,
        subtask=True,
        statements=CCCSConfig().statements,
        resume=True,
      )
  gin_setup.save_operative(f"{args.out}/operative_config.gin")
  print(evaluation.table_text(report), end="")
  print(f"wrote {args.out}/eval.md, eval.json, eval_samples.jsonl")
  if sub is not None:
    print(
      f"subtask from the last CCCS start point ({sub.settings['subtask_excluded']} of "
      f"{sub.settings['problems']} problems without a curriculum excluded):"
    )
    print(evaluation.table_text(sub), end="")
    print(f"wrote {args.out}/eval_subtask.md, eval_subtask.json, eval_subtask_samples.jsonl")
  return 0
