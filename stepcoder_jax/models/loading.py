"""One entry point for every kind of model location: `load_model(path_or_name)`.

Accepted:
  * "gemma3-270m": the bundled Gemma 3 270M (GGUF package, converted once and cached; Gemma terms
    of use apply to its weights).
  * "tiny-llama" / "tiny-qwen2" / "tiny-gemma3": a randomly initialised tiny model with the tiny
    offline tokenizer (tests, CPU smoke runs).
  * a .gguf file: converted once through transformers into a cached HF directory (models/gguf.py).
  * a Hugging Face directory (config.json + safetensors [+ tokenizer files]).
  * a Hugging Face Hub id ("Qwen/Qwen2.5-Coder-0.5B") when it is in the local HF cache
    (models/hub.py; nothing is downloaded).
  * a stepcoder_jax training directory / checkpoint (checkpoint.load_policy_for_inference).
"""

from __future__ import annotations

import os
from pathlib import Path

from stepcoder_jax.errors import UserError
from stepcoder_jax.models import gguf, hub
from stepcoder_jax.models.config import FAMILIES

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _is_checkpoint(p: Path) -> bool:
  """A stepcoder_jax training dir, its checkpoints/ dir, or one step dir inside it."""
  # Hook into checkpoint.py (another module's job): use its own notion of "a checkpoint of ours".
  try:
    from stepcoder_jax import checkpoint
  except ImportError:
    return False
  name = getattr(checkpoint, "MODEL_CONFIG_FILE", "model_config.json")
  return any((d / name).is_file() for d in (p, p / "checkpoints", p.parent))


def _load_checkpoint(p: Path):
  from stepcoder_jax import checkpoint

  load = getattr(checkpoint, "load_policy_for_inference", None)
  if load is None:  # HOOK: checkpoint.py does not offer inference loading (yet)
    raise UserError(
      f"{p}: looks like a stepcoder_jax checkpoint, but this build cannot load "
      "checkpoints for inference (checkpoint.load_policy_for_inference missing)"
    )
  return load(p)


def _load_hf_dir(p: Path, dtype, param_dtype, *, fast_tokenizer: bool = False):
  """Weights and tokenizer, read concurrently (both are mostly I/O and native code)."""
  from concurrent.futures import ThreadPoolExecutor

  from stepcoder_jax.models import hf_io
  from stepcoder_jax.models.tokenizer import load_tokenizer

  has_tok = any((p / f).is_file() for f in _TOKENIZER_FILES)
  with ThreadPoolExecutor(1) as pool:
    tok = pool.submit(load_tokenizer, p, fast=fast_tokenizer) if has_tok else None
    cfg, decoder = hf_io.load(p, dtype=dtype, param_dtype=param_dtype)
    return cfg, decoder, (tok.result() if tok is not None else None)


def _tiny(family: str, dtype, param_dtype):
  from flax import nnx

  from stepcoder_jax.models.config import ModelConfig
  from stepcoder_jax.models.decoder import Decoder
  from stepcoder_jax.models.tokenizer import tiny_tokenizer

  tok = tiny_tokenizer()
  cfg = ModelConfig.tiny(
    family,
    vocab_size=len(tok),
    bos_token_id=tok.bos_token_id,
    eos_token_id=tok.eos_token_id,
    pad_token_id=tok.pad_token_id,
    dtype=dtype or "float32",
    param_dtype=param_dtype or "float32",
  )
  return cfg, Decoder(cfg, nnx.Rngs(0)), tok


def load_model(
  path_or_name: str | os.PathLike, dtype: str | None = None, param_dtype: str | None = None
):
  """Load (ModelConfig, Decoder, tokenizer) from a path or a known name.

  Args:
    path_or_name: see the module docstring.
    dtype: compute dtype ('float32' | 'bfloat16'); default float32. Ignored for checkpoints of
      ours, which keep the dtypes they were trained with.
    param_dtype: storage dtype; default the checkpoint's.

  Returns:
    (cfg, decoder, tokenizer). The tokenizer is None only for an HF directory without tokenizer
    files or a checkpoint saved without one.

  Raises:
    UserError: a one-line message naming the path when it is not a loadable model.
  """
  s = str(path_or_name)
  if s == gguf.BUNDLED_NAME:
    return _load_hf_dir(gguf.bundled_hf_dir(), dtype, param_dtype, fast_tokenizer=True)
  if s.startswith("tiny-") and s[5:] in FAMILIES and not Path(s).exists():
    return _tiny(s[5:], dtype, param_dtype)
  p = Path(s).expanduser()
  if hub.looks_like_hub_id(s):
    p = hub.resolve(s)
  if not p.exists():
    raise UserError(
      f"{p}: no such file or directory (expected an HF model dir, a .gguf file, a "
      f"stepcoder_jax checkpoint, {gguf.BUNDLED_NAME!r} or "
      f"tiny-{{{','.join(FAMILIES)}}})"
    )
  if p.is_file():
    if p.suffix != ".gguf":
      raise UserError(
        f"{p}: not a .gguf file (expected an HF model dir, a .gguf file or a "
        "stepcoder_jax checkpoint)"
      )
    return _load_hf_dir(gguf.hf_dir_for(p), dtype, param_dtype, fast_tokenizer=True)
  if (p / "config.json").is_file():
    return _load_hf_dir(p, dtype, param_dtype)
  if _is_checkpoint(p):
    return _load_checkpoint(p)
  raise UserError(
    f"{p / 'config.json'}: missing (not a Hugging Face model directory nor a "
    "stepcoder_jax checkpoint)"
  )
