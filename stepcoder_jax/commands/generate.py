"""`stepcoder-jax generate`: complete a prompt with a model and print the completion.

--model is an HF directory, a .gguf file, a stepcoder_jax checkpoint, "gemma3-270m" (the bundled
Gemma 3 270M; Gemma terms of use apply to its weights) or a tiny random preset ("tiny-llama").
Sampling flags override the gin `sampling.*` bindings; --temperature 0 is greedy.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from stepcoder_jax.errors import UserError

HELP = "complete a prompt with a model (HF dir, .gguf, checkpoint, gemma3-270m) and print it"

log = logging.getLogger(__name__)


def add_arguments(parser) -> None:
  parser.add_argument(
    "--model",
    default=None,
    help="HF dir, .gguf file, stepcoder_jax checkpoint, 'gemma3-270m' or "
    "'tiny-llama' (default: gin model.path)",
  )
  src = parser.add_mutually_exclusive_group(required=True)
  src.add_argument("--prompt", help="prompt text")
  src.add_argument("--prompt_file", help="read the prompt from this file ('-' for stdin)")
  parser.add_argument("--max_new_tokens", type=int, default=None)
  parser.add_argument("--temperature", type=float, default=None, help="0 = greedy")
  parser.add_argument("--top_p", type=float, default=None)
  parser.add_argument("--top_k", type=int, default=None, help="0 = off")
  parser.add_argument(
    "--stop",
    action="append",
    default=None,
    help="stop string (repeatable): the completion is cut before it",
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--dtype",
    choices=("float32", "bfloat16"),
    default=None,
    help="compute dtype (default: gin model.dtype, else float32)",
  )


def _known_or_existing(path: str) -> None:
  """Reject a path that names nothing before paying for jax/transformers imports."""
  from stepcoder_jax.models.config import FAMILIES

  if path == "gemma3-270m" or (path.startswith("tiny-") and path[5:] in FAMILIES):
    return
  from stepcoder_jax.models import hub

  if hub.looks_like_hub_id(path):
    hub.resolve(path)  # in the HF cache, or one line saying how to download it
    return
  if not Path(path).expanduser().exists():
    raise UserError(
      f"{path}: no such file or directory (expected an HF model dir, a .gguf file, "
      "a stepcoder_jax checkpoint, 'gemma3-270m' or 'tiny-llama')"
    )


def _sampling_config(args):
  import dataclasses

  from stepcoder_jax.models.config import SamplingConfig

  base = SamplingConfig()  # gin bindings apply here
  changes = {
    k: getattr(args, k)
    for k in ("max_new_tokens", "temperature", "top_p", "top_k")
    if getattr(args, k) is not None
  }
  if args.stop:
    changes["stop_strings"] = tuple(args.stop)
  try:
    return dataclasses.replace(base, **changes)
  except ValueError as e:
    raise UserError(f"generate: {str(e).splitlines()[0]}") from None  # gin appends lines


def _prompt(args) -> str:
  if args.prompt is not None:
    return args.prompt
  if args.prompt_file == "-":
    return sys.stdin.read()
  p = Path(args.prompt_file)
  if not p.is_file():
    raise UserError(f"{p}: no such prompt file")
  return p.read_text()


def run(args) -> int:
  from stepcoder_jax.models.config import ModelSpec

  spec = ModelSpec()
  path = args.model or spec.path
  _known_or_existing(path)
  sampling_cfg = _sampling_config(args)
  prompt = _prompt(args)

  from stepcoder_jax import sampling
  from stepcoder_jax.models.loading import load_model

  t0 = time.time()
  cfg, model, tokenizer = load_model(
    path, dtype=args.dtype or spec.dtype, param_dtype=spec.param_dtype
  )
  if tokenizer is None:
    raise UserError(f"{path}: no tokenizer files next to the model")
  t1 = time.time()
  out = sampling.generate_text(model, tokenizer, [prompt], sampling_cfg, seed=args.seed)[0]
  t2 = time.time()
  log.info(
    "%s (%s): loaded in %.1f s; %d tokens in %.1f s (incl. compile); finish=%s",
    path,
    cfg.family,
    t1 - t0,
    len(out.token_ids),
    t2 - t1,
    out.finish_reason,
  )
  sys.stdout.write(out.text if out.text.endswith("\n") else out.text + "\n")
  sys.stdout.flush()
  return 0
