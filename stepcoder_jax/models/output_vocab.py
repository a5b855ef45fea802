"""Shipped output vocabularies: the token ids a policy may emit (`ModelConfig.output_vocab`).

A file holds one bit per token id of the tokenizer it was built with (`np.packbits`), so Gemma 3's
262,144 ids cost 32 KB before compression. `models/vocab_build.py` writes them; gin's
`model.output_vocab` names one (a file of this package's vocab/ directory, without '.npz') or
gives a path. Why it exists: most of Gemma's vocabulary (other scripts and languages) never occurs
in Python code, yet every sampled token and every scored log-prob pays for its 262k x 640 output
projection. Restricting the softmax to a fixed subset is a deviation from the model, so it is
opt-in (on only in the CPU demo config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from stepcoder_jax.errors import UserError

VOCAB_DIR = Path(__file__).parent / "vocab"


def shipped_names() -> list[str]:
  """Names `resolve` accepts without a path (the .npz files of the vocab/ directory)."""
  return sorted(p.stem for p in VOCAB_DIR.glob("*.npz"))


def resolve(name_or_path: str) -> Path:
  """The file of a shipped name ('gemma3_code') or of an explicit path; UserError if absent."""
  s = str(name_or_path)
  p = Path(s).expanduser()
  if p.suffix == ".npz" or "/" in s:
    if p.is_file():
      return p
    raise UserError(f"model.output_vocab: {p}: no such file")
  shipped = VOCAB_DIR / f"{s}.npz"
  if shipped.is_file():
    return shipped
  raise UserError(
    f"model.output_vocab: {s!r} is neither a file nor a shipped name "
    f"({', '.join(shipped_names()) or 'none shipped'})"
  )


def save(path: str | Path, ids: Iterable[int], vocab_size: int, source: str) -> None:
  """Write `ids` (< vocab_size) as a packed bitmap, with the tokenizer's size and a note."""
  mask = np.zeros(vocab_size, bool)
  mask[np.fromiter(ids, np.int64)] = True
  Path(path).parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(
    path, bits=np.packbits(mask), vocab_size=np.int64(vocab_size), source=np.str_(source)
  )


def load(name_or_path: str, model_vocab_size: int) -> tuple[int, ...]:
  """The sorted ids of a vocabulary file, checked against the model's vocabulary size."""
  path = resolve(name_or_path)
  try:
    with np.load(path) as f:
      n = int(f["vocab_size"])
      ids = np.flatnonzero(np.unpackbits(f["bits"])[:n])
  except (OSError, KeyError, ValueError) as e:
    raise UserError(f"model.output_vocab: {path}: not an output vocabulary file ({e})") from None
  if ids.size == 0:
    raise UserError(f"model.output_vocab: {path}: holds no token ids")
  if ids[-1] >= model_vocab_size:
    raise UserError(
      f"model.output_vocab: {path}: token id {int(ids[-1])} >= the model's "
      f"vocabulary size {model_vocab_size} (built for another tokenizer? "
      f"model.output_vocab = None keeps every token)"
    )
  return tuple(int(i) for i in ids)


def apply(cfg, name_or_path: str | None, required: Iterable[int] = ()):
  """`cfg` (a ModelConfig) with the output vocabulary `name_or_path` (None: unchanged).

  `required`: ids the sampler must be able to emit (EOS: without it no row could end early);
  a file lacking one is refused rather than silently producing rows that never stop.
  """
  if name_or_path is None:
    return cfg
  ids = load(name_or_path, cfg.vocab_size)
  missing = sorted(set(int(r) for r in required) - set(ids))
  if missing:
    raise UserError(
      f"model.output_vocab: {resolve(name_or_path)}: lacks the special id(s) "
      f"{missing} the sampler needs (rebuild it: "
      f"python -m stepcoder_jax.models.vocab_build)"
    )
  return cfg.replace(output_vocab=ids)
