"""`stepcoder-jax train`: StepCoder PPO (CCCS + FGO, each switchable) on a TFDS problem set.

Running it again on the same --work_dir resumes from the last checkpoint, with the settings it
was saved with (runs/train_settings.py; --allow_changed_settings continues with new ones).
"""

HELP = "StepCoder PPO training (resumes when --work_dir has a checkpoint)"


def add_arguments(parser):
  parser.add_argument(
    "--model",
    help="HF dir, .gguf, checkpoint, 'gemma3-270m' or tiny-<family>; default: gin model.path",
  )
  parser.add_argument("--work_dir", help="run directory; default: gin train.work_dir")
  from stepcoder_jax.commands import add_problem_arguments

  # --dataset/--split/--data_dir/--manual_dir or --problems FILE
  add_problem_arguments(parser, purpose="train")
  parser.add_argument("--iterations", type=int, help="override train.num_iterations")
  parser.add_argument(
    "--allow_changed_settings",
    action="store_true",
    help="resume a checkpoint saved with other model/PPO/CCCS/FGO/reward/data "
    "settings with this run's settings (docs/resume.md); without it such a "
    "resume stops with exit 2",
  )


def run(args) -> int:
  import dataclasses

  from stepcoder_jax.runs import final_policy, pipeline
  from stepcoder_jax.rl.config import TrainConfig

  cfg = TrainConfig()
  if args.work_dir:
    cfg = dataclasses.replace(cfg, work_dir=args.work_dir)
  if args.iterations is not None:
    cfg = dataclasses.replace(cfg, num_iterations=args.iterations)
  problems = None
  if args.problems or args.split:  # else pipeline.train reads gin's dataset.train_split
    from stepcoder_jax.data import load
    from stepcoder_jax.errors import UserError

    problems = load.problems_from_args(args, purpose="train")
    if not problems:
      raise UserError(f"train: {args.problems or args.split}: no problems to train on")
  source = None
  if problems is not None:
    source = args.problems or f"{args.dataset or 'gin dataset.name'} split {args.split}"
    source += f" ({len(problems)} problems)"
  history = pipeline.train(
    cfg,
    model=args.model,
    problems=problems,
    dataset=args.dataset,
    data_dir=args.data_dir,
    manual_dir=args.manual_dir,
    data_source=source,
    allow_changed_settings=args.allow_changed_settings,
  )
  import jax

  if jax.process_index() == 0:
    data = (
      f"--problems {args.problems}" if args.problems else "--dataset stepcoder_builtin --split test"
    )
    print(
      outputs_text(cfg.work_dir, len(history), final_policy.final_model_dir(cfg.work_dir), data),
      end="",
    )
  return 0


def outputs_text(work_dir: str, iterations: int, model_dir, data: str) -> str:
  """What the run left and what to run next (printed when `train` ends)."""
  from pathlib import Path

  work = Path(work_dir)
  lines = [
    f"train: {iterations} iteration(s) run; outputs in {work}",
    f"  metrics:      {work / 'metrics.jsonl'} (TensorBoard: {work / 'tensorboard'})",
    f"  curves:       {work / 'training_curves.png'}",
    f"  checkpoints:  {work / 'checkpoints'} (the same command resumes; --iterations N extends)",
  ]
  if Path(model_dir, "config.json").is_file():
    lines.append(f"  final policy: {model_dir} (Hugging Face directory)")
    src = str(model_dir)
  else:
    src = str(work)
  lines += [
    "next:",
    f"  stepcoder-jax eval --model {src} {data} --out {work / 'eval_final'}",
    f"  stepcoder-jax export --model {src} --out {work / 'hf_export'} "
    f"--results {work / 'eval_final' / 'eval.json'}",
  ]
  return "\n".join(lines) + "\n"
