"""`stepcoder-jax compile --topology NAME`: compile every program of a run for a TPU slice or a
GPU machine from this one (no accelerator needed), and say whether it fits and how fast it can go.

Exit status: 0 everything fits; 1 a program does not fit (one line on stderr: the program, its
peak, the chip's memory, what to change); 2 bad input (unknown topology, a mesh that does not
divide the devices, a gin error), one line. See docs/paper_scale.md.
"""

import argparse

HELP = "compile a run's programs for a TPU slice or GPU target: memory, FLOPs, time bounds"


def add_arguments(parser):
  parser.add_argument(
    "--topology",
    required=True,
    help="v4-8..v4-4096, v5p-8.., v5e-1..v5e-256, v6e-N, h100x8, a100x8, h200xN",
  )
  parser.add_argument(
    "--model",
    default=None,
    help="default: gin model.path (only its config.json is read; no weights)",
  )
  parser.add_argument(
    "--model_config", default=None, help="an HF config.json for a model that is not on this machine"
  )
  parser.add_argument(
    "--programs", default=None, help="comma-separated subset of sft_step,sampler,scoring,ppo_update"
  )
  parser.add_argument("--json", action="store_true", help="print the report as JSON")
  parser.add_argument("--out", default=None, help="also write the JSON report to this file")


def run(args: argparse.Namespace) -> int:
  import json
  import sys

  from stepcoder_jax.compile import report as report_lib
  from stepcoder_jax.compile import targets

  target = targets.parse(args.topology)  # before jax starts: a bad name costs nothing
  report_lib.prepare_environment(target)
  from stepcoder_jax.compile import model_source

  settings = _settings(args, model_source)
  wanted = tuple(p for p in (args.programs or "").split(",") if p) or None
  report = report_lib.compile_run(target, settings, wanted)
  line = report_lib.misfit_line(report)
  report["does_not_fit"] = line
  text = json.dumps(report, indent=1, sort_keys=True)
  if args.out:
    from pathlib import Path

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
  print(text if args.json else report_lib.table(report))
  if line:
    print(f"does not fit: {line}", file=sys.stderr)
    return 1
  return 0


def _settings(args, model_source):
  from stepcoder_jax.compile.report import Settings
  from stepcoder_jax.config import MeshConfig
  from stepcoder_jax.models.config import ModelSpec
  from stepcoder_jax.rl.config import PPOConfig, TrainConfig
  from stepcoder_jax.runs.config import SFTConfig

  model = model_source.model_config(ModelSpec(), args.model, args.model_config)
  return Settings(
    model=model, train=TrainConfig(), ppo=PPOConfig(), sft=SFTConfig(), mesh=MeshConfig()
  )
