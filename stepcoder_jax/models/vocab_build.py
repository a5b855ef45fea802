"""Build an output vocabulary (`model.output_vocab`): the token ids that occur in Python code.

Tokenizes, with the policy's tokenizer (default: the bundled Gemma 3 270M's, from the converted
cache; no model weights are read):
  * every bundled problem (stepcoder_jax/data/builtin/*.jsonl): each string of the record (question,
    starter code, canonical solution, test code, stdin/stdout cases), the repr of call-style test
    arguments, and the solution inside a ```python fence (so the closing fence's tokens, where
    generation stops, are in);
  * the Python sources of the running interpreter's standard library (sysconfig's 'stdlib',
    *.py in sorted order, site-/dist-packages left out so installed packages do not change the
    result, unreadable files skipped);
  * any extra files or directories given (a .jsonl: the strings of each record, e.g. MBPP; other
    files: their text; directories: their *.py and *.jsonl files);
then adds the ids the sampler needs to end and pad rows (sampling.special_ids: EOS ids, pad), BOS,
and the chat turn markers when the tokenizer has them, and writes a packed bitmap
(models/output_vocab.save). Deterministic for a given interpreter and tokenizer.

  python -m stepcoder_jax.models.vocab_build   # -> stepcoder_jax/models/vocab/gemma3_code.npz
  python -m stepcoder_jax.models.vocab_build mbpp.jsonl --out my_vocab.npz

(`stepcoder-jax ablate` runs it over its own problem files; scripts/build_output_vocab.py is the
same command.)
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

PACKAGE = Path(__file__).resolve().parent.parent
BUILTIN = PACKAGE / "data" / "builtin"
DEFAULT_OUT = PACKAGE / "models" / "vocab" / "gemma3_code.npz"
TURN_MARKERS = ("<start_of_turn>", "<end_of_turn>")
SKIP_DIRS = ("site-packages", "dist-packages")
BATCH_CHARS = 2_000_000  # texts per tokenizer call, by size (bounds memory, keeps calls few)


def record_texts(record) -> Iterator[str]:
  """Every string of a JSON record at any depth; other leaves of lists as their repr (call-style
  test arguments and expected values look like Python literals in generated tests)."""
  if isinstance(record, str):
    yield record
  elif isinstance(record, dict):
    for v in record.values():
      yield from record_texts(v)
  elif isinstance(record, list):
    for v in record:
      if isinstance(v, (list, dict, str)):
        yield from record_texts(v)
      elif v is not None:
        yield repr(v)
    if record and not all(isinstance(v, str) for v in record):
      yield repr(record)


def jsonl_texts(path: Path) -> Iterator[str]:
  for line in path.read_text(encoding="utf-8").splitlines():
    if line.strip():
      yield from record_texts(json.loads(line))


def builtin_texts() -> Iterator[str]:
  """The bundled problems' strings, and each solution as the policy writes it (fenced)."""
  for path in sorted(BUILTIN.glob("*.jsonl")):
    yield from jsonl_texts(path)
    for line in path.read_text(encoding="utf-8").splitlines():
      sol = json.loads(line).get("canonical_solution") if line.strip() else None
      if sol:
        yield f"```python\n{sol.rstrip()}\n```\n"


def file_texts(paths: Iterable[Path]) -> Iterator[str]:
  """Text of each readable file; a .jsonl file gives the strings of its records."""
  for path in paths:
    try:
      if path.suffix == ".jsonl":
        yield from jsonl_texts(path)
      else:
        yield path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
      print(f"  skipped {path}: {type(e).__name__}", file=sys.stderr)


def stdlib_files() -> list[Path]:
  root = Path(sysconfig.get_paths()["stdlib"])
  return sorted(
    p
    for p in root.rglob("*.py")
    if not any(part in SKIP_DIRS for part in p.relative_to(root).parts)
  )


def expand(paths: Iterable[str]) -> list[Path]:
  out = []
  for s in paths:
    p = Path(s).expanduser()
    if p.is_dir():
      out += sorted(q for q in p.rglob("*") if q.suffix in (".py", ".jsonl") and q.is_file())
    elif p.is_file():
      out.append(p)
    else:
      raise SystemExit(f"{p}: no such file or directory")
  return out


def token_ids(tok, texts: Iterable[str]) -> np.ndarray:
  """The distinct ids of all `texts` (tokenized in size-bounded batches, no special tokens)."""
  seen: set[int] = set()
  batch, size = [], 0

  def flush():
    if batch:
      for ids in tok(batch, add_special_tokens=False)["input_ids"]:
        seen.update(ids)
      batch.clear()

  for t in texts:
    batch.append(t)
    size += len(t)
    if size >= BATCH_CHARS:
      flush()
      size = 0
  flush()
  return np.array(sorted(seen), np.int64)


def special(tok, model_cfg) -> set[int]:
  """EOS ids and pad (sampling.special_ids, as training and evaluation take them), BOS, turns."""
  from stepcoder_jax.sampling import special_ids

  eos, pad = special_ids(model_cfg, tok)
  out = {*eos, pad}
  for i in (tok.bos_token_id, model_cfg.bos_token_id):
    if i is not None:
      out.add(int(i))
  vocab = tok.get_vocab()
  out.update(vocab[m] for m in TURN_MARKERS if m in vocab)
  return out


def load_tokenizer_and_config(model: str):
  """(tokenizer, ModelConfig) of a model location without loading its weights."""
  from stepcoder_jax.models import gguf, hf_io
  from stepcoder_jax.models.tokenizer import load_tokenizer

  d = gguf.bundled_hf_dir() if model == gguf.BUNDLED_NAME else Path(model).expanduser()
  raw = json.loads((d / "config.json").read_text())
  return load_tokenizer(d, fast=True), hf_io.config_from_hf(raw, str(d / "config.json"))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("extra", nargs="*", help="more files or directories to tokenize")
  p.add_argument(
    "--model",
    default="gemma3-270m",
    help="HF model directory whose tokenizer is used (default: the bundled Gemma)",
  )
  p.add_argument("--out", default=str(DEFAULT_OUT))
  p.add_argument("--no_stdlib", action="store_true", help="leave the standard library out")
  args = p.parse_args(argv)

  from stepcoder_jax.models import output_vocab

  tok, cfg = load_tokenizer_and_config(args.model)
  vocab_size = max(len(tok), cfg.vocab_size)
  parts = {"bundled problems": builtin_texts()}
  if not args.no_stdlib:
    files = stdlib_files()
    parts[f"stdlib ({len(files)} files)"] = file_texts(files)
  if args.extra:
    parts[f"extra ({len(args.extra)} paths)"] = file_texts(expand(args.extra))
  ids: set[int] = set()
  for name, texts in parts.items():
    found = token_ids(tok, texts)
    ids.update(found.tolist())
    print(f"{name}: {len(found)} distinct ids ({len(ids)} so far)")
  extra = special(tok, cfg) - ids
  ids |= special(tok, cfg)
  print(f"special ids added: {sorted(extra)}")
  out = Path(args.out)
  output_vocab.save(
    out,
    sorted(ids),
    vocab_size,
    source=f"{args.model}: bundled problems"
    + ("" if args.no_stdlib else f", Python {sys.version.split()[0]} stdlib")
    + "".join(f", {e}" for e in args.extra),
  )
  print(
    f"{len(ids)} ids of {vocab_size} ({100 * len(ids) / vocab_size:.1f}%) -> {out} "
    f"({out.stat().st_size} bytes)"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
