"""`stepcoder-jax demo`: the embedded default end to end, offline on CPU.

Gemma 3 270M (bundled) -> greedy pass@1 of the base model on the bundled test split -> SFT on the
canonical solutions of the training split (the paper's SFT stage; it becomes the frozen reference)
-> StepCoder PPO (CCCS + FGO) -> greedy pass@1 again, as a before/after table and plots.

Stages that finished are reused when the command runs again on the same --work_dir (the SFT model,
the training checkpoints), so an interrupted demo loses at most one PPO iteration.
"""
HELP = "the embedded default: SFT + StepCoder on the bundled problems, before/after pass@1"
DEFAULT_GIN_FILES = ("experiments/cpu_demo_gemma.gin",)


def add_arguments(parser):
  parser.add_argument("--work_dir", default="runs/demo", help="outputs (default: runs/demo)")
  parser.add_argument("--model", help="override gin model.path (e.g. tiny-llama for a smoke run)")


def run(args) -> int:
  from stepcoder_jax.runs import demo
  report = demo.run_demo(args.work_dir, model=args.model)
  print(report)
  return 0
