"""Command-line entry: `stepcoder-jax <command> [flags] [--gin_file=F] [--gin.NAME=VALUE]`.

Usage errors (unknown command, bad flag, unknown gin binding, missing file) print one line and exit
with status 2 before any heavy import. Ctrl-C prints one line and exits with 130 (a `train` run
resumes from its last checkpoint when started again); output piped into a reader that stops early
(`config ... | head`) ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from stepcoder_jax import cache, gin_setup, preemption
from stepcoder_jax.errors import UserError

# command name -> module under stepcoder_jax.commands
COMMANDS = {
  "config": "config",
  "generate": "generate",
  "judge": "judge",
  "sft": "sft",
  "train": "train",
  "eval": "evaluate",
  "export": "export",
  "demo": "demo",
  "prepare": "prepare",
  "curriculum": "curriculum",
  "ablate": "ablate",
  "compile": "compile",
}


class UsageError(Exception):
  pass


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, exit 2 (argparse prints usage too; we keep it short)
    raise UsageError(f"{self.prog}: {message}")


def _available() -> dict[str, object]:
  mods = {}
  for name, mod in COMMANDS.items():
    try:
      mods[name] = importlib.import_module(f"stepcoder_jax.commands.{mod}")
    except ModuleNotFoundError as e:
      if e.name != f"stepcoder_jax.commands.{mod}":
        raise
  return mods


# Every command reads gin; the flags are taken out of argv before argparse sees it.
GIN_HELP = (
  "gin settings (every command): --gin_file FILE (repeatable; a path, or a name under "
  "the shipped configs/ such as experiments/tiny_cpu.gin) and --gin.NAME=VALUE "
  "(repeatable, e.g. --gin.ppo.kl_coef=0.05; a string needs quotes: "
  "--gin.model.path=\"'gemma3-270m'\"). `stepcoder-jax config --defaults` lists every "
  "setting with its default."
)


def build_parser(mods) -> argparse.ArgumentParser:
  p = _Parser(
    prog="stepcoder-jax",
    description="StepCoder (PPO + CCCS + FGO) in JAX.",
    usage="stepcoder-jax COMMAND [flags] [--gin_file FILE]... [--gin.NAME=VALUE]...",
    epilog=GIN_HELP,
  )
  sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
  for name, mod in mods.items():
    sp = sub.add_parser(
      name, help=getattr(mod, "HELP", ""), epilog=GIN_HELP, description=getattr(mod, "HELP", None)
    )
    mod.add_arguments(sp)
  return p


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  # Our modules log at INFO; third-party libraries (gin's search-path chatter, absl) at WARNING.
  logging.basicConfig(
    level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
  )
  logging.getLogger("stepcoder_jax").setLevel(logging.INFO)
  logging.getLogger("absl").setLevel(logging.ERROR)  # TFDS's "custom data configuration" notes
  cache.route_library_caches()  # matplotlib, HF, TFDS caches under $STEPCODER_JAX_CACHE, not ~
  rest: list[str] = []
  try:
    rest, gin_files, gin_bindings = gin_setup.split_gin_args(argv)
    mods = _available()
    parser = build_parser(mods)
    if not rest or rest[0] in ("-h", "--help"):
      parser.print_help()
      return 0 if rest else 2
    if rest[0] not in mods:
      raise UsageError(f"stepcoder-jax: unknown command {rest[0]!r}; choose from {sorted(mods)}")
    args = parser.parse_args(rest)
    # A command may name default gin files (e.g. the demo's experiment) used when none is given.
    gin_files = gin_files or list(getattr(mods[args.command], "DEFAULT_GIN_FILES", ()))
    gin_setup.parse(gin_files, gin_bindings)
    args.gin_files, args.gin_bindings = gin_files, gin_bindings
    status = int(mods[args.command].run(args) or 0)
    sys.stdout.flush()  # here, so that a closed pipe is caught below and not at exit
    return status
  except preemption.Stopped as e:  # a train/sft loop saved after SIGTERM/SIGINT: a clean exit
    print(e, flush=True)
    return 0
  except KeyboardInterrupt:
    name = " ".join(["stepcoder-jax"] + rest[:1])
    hint = "; run it again to resume from its last checkpoint" if rest[:1] == ["train"] else ""
    print(f"error: {name}: interrupted (Ctrl-C){hint}", file=sys.stderr)
    return 130
  except BrokenPipeError:
    # The reader left (e.g. `| head`): nothing more to say; keep Python from failing on the
    # final flush of stdout as well.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141
  except (UsageError, gin_setup.GinError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except UserError as e:
    # One line by contract; gin appends "In call to configurable ..." lines to errors raised
    # while it builds a config object, which repeat what the message already names.
    print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
    return 2
