"""One module per CLI command. Each defines `HELP`, `add_arguments(parser)` and `run(args) -> int`.

Command modules import only light modules at top level (argparse, gin, dataclasses): heavy imports
(jax, transformers) happen inside `run`, so a bad flag fails in well under a second.
"""


def add_model_argument(parser) -> None:
  """--model, shared by the commands that load a policy."""
  parser.add_argument(
    "--model",
    default=None,
    help="HF dir, .gguf, checkpoint, gemma3-270m or tiny-{llama,qwen2,gemma3}; "
    "default: gin model.path",
  )


def add_problem_arguments(parser, purpose: str = "eval") -> None:
  """--dataset/--split/--data_dir/--manual_dir, or --problems FILE ('train' or 'eval' problems)."""
  from stepcoder_jax.data.load import add_dataset_arguments

  add_dataset_arguments(parser, purpose=purpose)
  parser.add_argument(
    "--problems", default=None, help="read problems from this file instead of a TFDS dataset"
  )
