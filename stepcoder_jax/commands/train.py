"""`stepcoder-jax train`: StepCoder PPO (CCCS + FGO, each switchable) on a TFDS problem set.

Running it again on the same --work_dir resumes from the last checkpoint.
"""
HELP = "StepCoder PPO training (resumes when --work_dir has a checkpoint)"


def add_arguments(parser):
  parser.add_argument("--model", help="HF dir, .gguf, checkpoint, 'gemma3-270m' or tiny-<family>;"
                      " default: gin model.path")
  parser.add_argument("--work_dir", help="run directory; default: gin train.work_dir")
  parser.add_argument("--dataset", help="TFDS builder name; default: gin dataset.name")
  parser.add_argument("--data_dir", help="TFDS data dir; default: gin dataset.data_dir")
  parser.add_argument("--manual_dir", help="manual downloads (APPS+ data.json ...)")
  parser.add_argument("--iterations", type=int, help="override train.num_iterations")


def run(args) -> int:
  import dataclasses

  from stepcoder_jax.runs import pipeline
  from stepcoder_jax.rl.config import TrainConfig

  cfg = TrainConfig()
  if args.work_dir:
    cfg = dataclasses.replace(cfg, work_dir=args.work_dir)
  if args.iterations is not None:
    cfg = dataclasses.replace(cfg, num_iterations=args.iterations)
  pipeline.train(cfg, model=args.model, dataset=args.dataset, data_dir=args.data_dir,
                 manual_dir=args.manual_dir)
  return 0
