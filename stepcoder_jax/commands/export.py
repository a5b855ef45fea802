"""`stepcoder-jax export`: write a model as a Hugging Face directory, optionally push it to the Hub.

The output loads with `transformers.AutoModelForCausalLM.from_pretrained(OUT)` (and
`AutoTokenizer.from_pretrained(OUT)` when the source has a tokenizer).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from stepcoder_jax.errors import UserError
from stepcoder_jax.models import model_card

HELP = "export a model to a Hugging Face directory (safetensors, config, tokenizer)"

log = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def add_arguments(parser) -> None:
  parser.add_argument(
    "--model",
    required=True,
    metavar="PATH",
    help="model to export: a Hugging Face directory (or what models.loading "
    "accepts: GGUF file, checkpoint)",
  )
  parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
  parser.add_argument(
    "--push_to_hub",
    default=None,
    metavar="REPO",
    help="also upload DIR to this Hugging Face Hub repo (needs network + token)",
  )
  parser.add_argument(
    "--dtype",
    default=None,
    choices=["float32", "bfloat16", "float16"],
    help="dtype of the written tensors (default: the model's)",
  )
  parser.add_argument(
    "--max_shard_size",
    default="5GB",
    help="largest safetensors shard, e.g. 5GB, 500MB, or bytes (default 5GB)",
  )
  parser.add_argument(
    "--results",
    action="append",
    default=[],
    metavar="EVAL_JSON",
    help="an `eval` result (eval.json or eval.md) to put in the model card (repeatable)",
  )
  parser.add_argument(
    "--base_model",
    default=None,
    help="the model card's base model (default: what train/sft recorded)",
  )
  parser.add_argument(
    "--data", default=None, help="the model card's training data (default: what train/sft recorded)"
  )


def parse_size(text: str) -> int:
  """'5GB' -> 5e9 bytes (decimal units, as transformers uses)."""
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", text, re.IGNORECASE)
  if not m:
    raise UserError(f"--max_shard_size: cannot parse {text!r} (e.g. 5GB, 500MB, 1000000)")
  units = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
  size = int(float(m.group(1)) * units[(m.group(2) or "B").upper()])
  if size <= 0:
    raise UserError(f"--max_shard_size: must be positive, got {text!r}")
  return size


def load_any(path: str):
  """(ModelConfig, Decoder, tokenizer or None) from `path`.

  models.loading.load_model (HF dir, GGUF file, our checkpoint, named models) when that module
  exists, else a Hugging Face directory through hf_io plus its tokenizer files, if any.
  """
  try:
    from stepcoder_jax.models import loading  # pylint: disable=import-outside-toplevel
  except ModuleNotFoundError as e:
    if e.name != "stepcoder_jax.models.loading":
      raise
    loading = None
  if loading is not None and hasattr(loading, "load_model"):
    loaded = tuple(loading.load_model(path))
    tokenizer = loaded[2] if len(loaded) > 2 else _tokenizer_for(path)
    return loaded[0], loaded[1], tokenizer
  from stepcoder_jax.models import hf_io  # pylint: disable=import-outside-toplevel

  cfg, decoder = hf_io.load(path)
  return cfg, decoder, _tokenizer_for(path)


def _tokenizer_for(path: str):
  """The source's tokenizer, or None when it has none (the export then has no tokenizer files)."""
  p = Path(path)
  has = (p.is_dir() and any((p / f).is_file() for f in _TOKENIZER_FILES)) or p.suffix == ".gguf"
  if not has:
    return None
  from stepcoder_jax.models.tokenizer import load_tokenizer  # pylint: disable=import-outside-toplevel

  return load_tokenizer(path)


def push(out: Path, repo: str) -> str:
  """Upload `out` to the Hub repo; any failure (offline, no token, no rights) is one line."""
  try:
    from huggingface_hub import HfApi  # pylint: disable=import-outside-toplevel

    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    info = api.upload_folder(
      folder_path=str(out), repo_id=repo, commit_message="Upload from stepcoder-jax export"
    )
  except Exception as e:  # network, auth and HTTP errors all end the same way for the user
    msg = " ".join(str(e).split())[:300]
    raise UserError(
      f"--push_to_hub {repo}: upload failed ({type(e).__name__}: {msg}); "
      f"the export in {out} is complete"
    ) from None
  return str(getattr(info, "commit_url", repo))


def write_card(args, cfg, out: Path, results) -> None:
  """README.md: the source's provenance (flags win), the results given, the terms that apply."""
  src = Path(args.model)
  prov = model_card.read_provenance(src) if src.is_dir() else {}
  if args.base_model:
    prov["base_model"] = args.base_model
  if args.data:
    prov["data"] = args.data
  prov.setdefault("base_model", args.model if not prov else None)
  gemma = cfg.is_gemma or "gemma" in str(prov.get("base_model", "")).lower()
  text = model_card.card(
    name=out.name,
    family=cfg.family,
    num_layers=cfg.num_layers,
    vocab_size=cfg.vocab_size,
    dtype=args.dtype or cfg.param_dtype,
    provenance=prov,
    results=results,
    gemma=gemma,
  )
  (out / "README.md").write_text(text, encoding="utf-8")


def run(args) -> int:
  max_shard = parse_size(args.max_shard_size)
  out = Path(args.out)
  if out.exists() and not out.is_dir():
    raise UserError(f"--out {out}: exists and is not a directory")
  from stepcoder_jax.models import hf_io  # pylint: disable=import-outside-toplevel

  cfg, decoder, tokenizer = load_any(args.model)
  if tokenizer is None:
    log.warning("%s has no tokenizer; exporting the model without tokenizer files", args.model)
  results = [(r, model_card.results_text(r)) for r in args.results]  # bad paths fail first
  hf_io.export(cfg, decoder, tokenizer, out, max_shard_bytes=max_shard, dtype=args.dtype)
  write_card(args, cfg, out, results)
  print(
    f"exported {cfg.family} model ({cfg.num_layers} layers, vocab {cfg.vocab_size}) to {out}"
    f" with its model card ({out / 'README.md'})"
  )
  if args.push_to_hub:
    url = push(out, args.push_to_hub)
    print(f"pushed to {url}")
  return 0
