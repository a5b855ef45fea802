"""`stepcoder-jax sft`: next-token training on canonical solutions (the SFT baseline and the
reference policy of PPO).

    stepcoder-jax sft --model tiny-llama --dataset stepcoder_builtin --split train --out runs/sft \
        [--gin.sft.steps=100 --gin.sft.learning_rate=1e-5]

Writes an HF model directory to --out (readable by `train --model`, `eval --model`), with the
loss log (metrics.jsonl, TensorBoard events), sft_summary.json and the operative gin config.
"""
from __future__ import annotations

HELP = "fine-tune on canonical solutions; writes an HF model dir (the reference policy)"


def add_arguments(parser) -> None:
  from stepcoder_jax.commands import add_model_argument, add_problem_arguments
  add_model_argument(parser)
  add_problem_arguments(parser)
  parser.add_argument("--out", required=True, help="output directory (an HF model dir)")
  parser.add_argument("--steps", type=int, default=None, help="override gin sft.steps")


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
  if cfg.steps < 1 or cfg.batch_size < 1:
    raise UserError(f"sft: steps ({cfg.steps}) and batch_size ({cfg.batch_size}) must be >= 1")
  problems = load.problems_from_args(args, purpose="train")  # cheap failures before the model
  if not problems:
    raise UserError("sft: the dataset split has no problems")

  from stepcoder_jax.runs import pipeline, sft

  models = pipeline.load_policy(args.model)  # gin model.* gives the default path and dtypes
  out = Path(args.out)
  from stepcoder_jax.rl.config import CCCSConfig
  _, summary = sft.train_sft(models.policy, models.tokenizer, problems, cfg, out,
                             statements=CCCSConfig().statements)
  gin_setup.save_operative(str(out / "operative_config.gin"))
  skipped = {k: len(v) for k, v in summary["skipped"].items() if v}
  nll = ""
  if summary["initial_nll"] is not None:
    nll = (f", target NLL {summary['initial_nll']:.4f} -> {summary['final_nll']:.4f} "
           f"(first {summary['nll_examples']} examples)")
  print(f"sft: {summary['examples']} examples, {summary['steps']} steps{nll}"
        + (f", skipped {skipped}" if skipped else ""))
  print(f"saved {out}")
  return 0
