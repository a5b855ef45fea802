"""`stepcoder-jax ablate`: the paper's ablation (PPO, +CCCS, +FGO, StepCoder, critic-free arms)
as one resumable command.

    stepcoder-jax ablate --out runs/ablation --mbpp path/to/mbpp/ \
        [--arms ppo cccs fgo stepcoder grpo grpo_stepcoder] [--eval_n 4] [--heldout_mbpp 100]
        [--gin_file experiments/ablation_gemma.gin] [--gin.train.num_iterations=40]

Runs data -> SFT -> base/SFT evals -> per arm: train, export, evals -> report.md, each model
stage as its own process (stepcoder_jax/ablation/). Running it again skips every finished stage.
With --tune NAME=BINDINGS it runs the tuning plan instead: settings of one arm tried on the
validation problems (ablation/tune.py), never on the held-out set.
"""

from __future__ import annotations

HELP = "the paper's ablation, resumable: SFT, every arm, held-out evals, report with intervals"
DEFAULT_GIN_FILES = ("experiments/ablation_gemma.gin",)


def add_arguments(parser) -> None:
  from stepcoder_jax.commands import add_model_argument
  from stepcoder_jax.ablation.plan import ARMS  # light: no jax

  parser.add_argument("--out", default="runs/ablation", help="work dir (default runs/ablation)")
  add_model_argument(parser)
  parser.add_argument(
    "--mbpp",
    default=None,
    metavar="PATH",
    help="MBPP's mbpp.jsonl (or its folder): adds its train, validation and test "
    "splits; without it, the bundled problems alone",
  )
  parser.add_argument(
    "--heldout_mbpp",
    type=int,
    default=100,
    metavar="N",
    help="first N MBPP test problems (by task id) in the held-out set (default "
    "100: each evaluation samples every held-out problem on 2 cores)",
  )
  parser.add_argument(
    "--eval_n",
    type=int,
    default=4,
    help="samples per problem of the sampled evaluation (default 4)",
  )
  parser.add_argument(
    "--report_only",
    action="store_true",
    help="rewrite report.md, metrics and plots from the finished stages; run "
    "nothing (e.g. after a kill)",
  )
  parser.add_argument(
    "--arms",
    nargs="+",
    default=list(ARMS),
    help=f"arms, each a configs/ablations/<arm>.gin (default: {' '.join(ARMS)})",
  )
  parser.add_argument(
    "--arm_dir",
    default="ablations",
    metavar="DIR",
    help="the arms' gin files are configs/DIR/<arm>.gin (default ablations; "
    "'signal': the reward-signal measurement, docs/results/signal/)",
  )
  parser.add_argument(
    "--control_temperatures",
    nargs="+",
    type=float,
    default=[],
    metavar="T",
    help="also sample the SFT model at these temperatures on the held-out set "
    "(the sharpening control: ablation/control.py)",
  )
  parser.add_argument(
    "--tune",
    action="append",
    default=[],
    metavar="NAME=BINDING[;BINDING]",
    help="instead of the arms: train the --tune_arm with these gin bindings "
    "added and evaluate it on the VALIDATION problems and the RL pool, "
    "beside SFT (repeatable; 'NAME=' is the arm as it is; "
    "ablation/tune.py)",
  )
  parser.add_argument(
    "--tune_arm",
    default="stepcoder",
    help="the arm every --tune point starts from (default stepcoder)",
  )


def run(args) -> int:
  import dataclasses
  import shlex
  from pathlib import Path

  from stepcoder_jax.models.config import ModelSpec
  from stepcoder_jax.ablation import plan, run as ablation_run, tune as ablation_tune

  # With a restricted output vocabulary in the gin, the run builds its own over its problems.
  spec = ModelSpec()
  s = plan.Settings(
    out=Path(args.out).resolve(),
    arms=tuple(args.arms),
    mbpp=args.mbpp,
    heldout_mbpp=args.heldout_mbpp,
    eval_n=args.eval_n,
    model=args.model,
    gin_files=tuple(args.gin_files),
    gin_bindings=tuple(args.gin_bindings),
    vocab_from=(args.model or spec.path) if spec.output_vocab else None,
    tune=tuple(ablation_tune.parse(t) for t in args.tune),
    tune_arm=args.tune_arm,
    controls=tuple(args.control_temperatures),
    arm_dir=args.arm_dir,
  )
  # The command line as parsed (flags and gin), for the report: reproducible as written.
  flags = ["--out", args.out, "--arms", *args.arms, "--eval_n", str(args.eval_n)]
  flags += ["--arm_dir", args.arm_dir] if args.arm_dir != "ablations" else []
  flags += ["--model", args.model] if args.model else []
  flags += ["--mbpp", args.mbpp, "--heldout_mbpp", str(args.heldout_mbpp)] if args.mbpp else []
  if args.control_temperatures:
    flags += ["--control_temperatures", *(f"{t:g}" for t in args.control_temperatures)]
  for t in args.tune:
    flags += ["--tune", t]
  flags += ["--tune_arm", args.tune_arm] if args.tune else []
  line = [
    "stepcoder-jax",
    "ablate",
    *flags,
    *plan.gin_argv(dataclasses.replace(s, vocab_from=None)),
  ]
  return ablation_run.run_ablation(
    dataclasses.replace(s, command_line=shlex.join(line)), report_only=args.report_only
  )
