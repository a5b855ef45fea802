"""One module per CLI command. Each defines `HELP`, `add_arguments(parser)` and `run(args) -> int`.

Command modules import only light modules at top level (argparse, gin, dataclasses): heavy imports
(jax, transformers) happen inside `run`, so a bad flag fails in well under a second.
"""
