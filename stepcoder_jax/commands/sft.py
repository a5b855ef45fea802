"""`stepcoder-jax sft`: next-token training on canonical solutions (the SFT baseline and the
reference policy of PPO).

    stepcoder-jax sft --model tiny-llama --dataset stepcoder_builtin --split train --out runs/sft \
        [--gin.sft.steps=100 --gin.sft.learning_rate=1e-5] \
        [--val_problems val.jsonl --gin.sft.eval_every=10 --gin.sft.patience=3]

Writes an HF model directory to --out (readable by `train --model`, `eval --model`), with the
loss log (metrics.jsonl, TensorBoard events), sft_summary.json and the operative gin config.
With --val_problems, the validation NLL chooses the saved model and may stop the run early
(runs/sft.py). An --out that already holds a finished SFT run is left as it is (exit 0); an
unfinished one (killed) resumes from its last checkpoint in <out>/checkpoints.
"""

from __future__ import annotations

HELP = "fine-tune on canonical solutions; writes an HF model dir (the reference policy)"


def add_arguments(parser) -> None:
  from stepcoder_jax.commands import add_model_argument, add_problem_arguments

  add_model_argument(parser)
  add_problem_arguments(parser, purpose="train")
  parser.add_argument("--out", required=True, help="output directory (an HF model dir)")
  parser.add_argument("--steps", type=int, default=None, help="override gin sft.steps")
  parser.add_argument(
    "--val_problems",
    default=None,
    help="validation problems file (like --problems): its target NLL picks "
    "the saved model and stops the run early (gin sft.patience)",
  )


def run(args) -> int:
  import dataclasses
  from pathlib import Path

  from stepcoder_jax import gin_setup
  from stepcoder_jax.data import load
  from stepcoder_jax.errors import UserError
  from stepcoder_jax.runs.config import SFTConfig

  cfg = SFTConfig()
  if args.steps is not None:
    cfg = dataclasses.replace(cfg, steps=args.steps)
  from stepcoder_jax.runs import sft

  sft.check_config(cfg)
  done = sft.finished_summary(args.out)
  if done is not None:
    print(
      f"sft: {args.out} already holds a finished run ({done.get('steps_run')} steps); nothing to do"
    )
    return 0
  problems = load.problems_from_args(args, purpose="train")  # cheap failures before the model
  if not problems:
    raise UserError("sft: the dataset split has no problems")
  val_problems = None
  if args.val_problems:
    try:
      val_problems = load.load_problem_file(args.val_problems)
    except UserError as e:
      raise UserError(f"sft: --val_problems: {e}") from None
    if not val_problems:
      raise UserError(f"sft: --val_problems {args.val_problems} has no problems")

  from stepcoder_jax.runs import pipeline

  models = pipeline.load_policy(args.model)  # gin model.* gives the default path and dtypes
  out = Path(args.out)
  from stepcoder_jax.config import MeshConfig
  from stepcoder_jax.rl.config import CCCSConfig

  _, summary = sft.train_sft(
    models.policy,
    models.tokenizer,
    problems,
    cfg,
    out,
    statements=CCCSConfig().statements,
    val_problems=val_problems,
    mesh_cfg=MeshConfig(),
  )  # the PPO step's mesh and rules
  gin_setup.save_operative(str(out / "operative_config.gin"))
  sft.write_provenance(
    out,
    args.model,
    args.problems
    or f"{args.dataset or 'gin dataset.name'} split {args.split or 'gin dataset.train_split'}",
    len(problems),
    cfg,
  )
  skipped = {k: len(v) for k, v in summary["skipped"].items() if v}
  nll = ""
  if summary["initial_nll"] is not None:
    nll = (
      f", target NLL {summary['initial_nll']:.4f} -> {summary['final_nll']:.4f} "
      f"(first {summary['nll_examples']} examples)"
    )
  print(
    f"sft: {summary['examples']} examples, {summary['steps_run']} steps{nll}"
    + (f", skipped {skipped}" if skipped else "")
  )
  if summary.get("best_step") is not None:
    print(
      f"sft: validation NLL {summary['initial_val_nll']:.4f} -> best "
      f"{summary['best_val_nll']:.4f} at step {summary['best_step']} of "
      f"{summary['steps_run']} ({summary['stop_reason']}; saved the best)"
    )
  print(f"saved {out}")
  return 0
