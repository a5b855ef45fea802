"""`stepcoder-jax prepare`: build a TFDS dataset (array_record) so training/eval can read it."""

from __future__ import annotations

HELP = "build a TFDS dataset (apps_plus, apps, humaneval, mbpp, stepcoder_builtin)"


def add_arguments(parser) -> None:
  from stepcoder_jax.data.load import add_dataset_arguments

  add_dataset_arguments(parser, split=False)
  parser.add_argument(
    "--force",
    action="store_true",
    help="rebuild even when the dataset is already built (e.g. new manual files)",
  )


def run(args) -> int:
  from stepcoder_jax.data import builders, load

  name, _, data_dir, manual_dir = load.dataset_from_args(args)
  data_dir = data_dir or load.default_data_dir()
  builder = builders.prepare(name, data_dir, manual_dir, force=args.force, progress=True)
  for split, info in sorted(builder.info.splits.items()):
    print(f"{name} {split}: {info.num_examples} problems")
  print(f"built in {builder.data_path}")
  return 0
