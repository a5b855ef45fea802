"""`stepcoder-jax demo`: the embedded default end to end, offline on CPU.

Gemma 3 270M (bundled) -> SFT on the canonical solutions of the training split (the paper's SFT
stage; it becomes the frozen reference) -> StepCoder PPO (CCCS + FGO). Each stage is evaluated
greedily on the bundled test split (pass@1, share of unit tests passed, the subtask from the last
CCCS start point); the command prints the before/after table with paired 95% bootstrap intervals
and the paths of report.md, the plots and the final StepCoder model (an HF directory that `eval`
and `export` take as it is).

Stages that finished are reused when the command runs again on the same --work_dir (each stage's
evaluation, the SFT model, the training checkpoints), so an interrupted demo loses at most one PPO
iteration or one evaluation.
"""

HELP = "the embedded default: SFT + StepCoder on the bundled problems, before/after with intervals"
DEFAULT_GIN_FILES = ("experiments/cpu_demo_gemma.gin",)


def add_arguments(parser):
  parser.add_argument("--work_dir", default="runs/demo", help="outputs (default: runs/demo)")
  parser.add_argument("--model", help="override gin model.path (e.g. tiny-llama for a smoke run)")


def run(args) -> int:
  from stepcoder_jax.runs import demo

  print(demo.run_demo(args.work_dir, model=args.model), end="")
  return 0
