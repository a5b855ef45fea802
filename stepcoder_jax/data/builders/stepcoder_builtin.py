"""TFDS builder ``stepcoder_builtin``: the problem set shipped inside the package.

Source: every ``stepcoder_jax/data/builtin/*.jsonl`` package file (our Problem records, ids
``builtin/<kind>/NNNN``), read through importlib.resources, so it works from an installed wheel
and needs no download.

Split: a problem whose id ends in a number divisible by 5 (``builtin/call/0005``, ``.../0010``,
...) is ``test``; every other problem is ``train``.

The builder has no config, so TFDS finds it by name, with or without this module imported:
``tfds.data_source("stepcoder_builtin", split="test", data_dir=D)`` (docs/datasets.md). The
files' content hash is kept in the dataset's metadata (``metadata.json``); `builders.prepare`
rebuilds a dataset whose hash is not the package's, so editing the bundled set never reuses a
stale build.
"""

from __future__ import annotations

import hashlib

import importlib_resources
import tensorflow_datasets as tfds

from stepcoder_jax.data.builders._base import ProblemBuilder, split_by_suffix
from stepcoder_jax.data.record import Problem, RecordError
from stepcoder_jax.errors import UserError

PACKAGE = "stepcoder_jax.data"
FOLDER = "builtin"
TEST_MODULUS = 5


def _files():
  root = importlib_resources.files(PACKAGE) / FOLDER
  if not root.is_dir():
    return []
  return sorted((f for f in root.iterdir() if f.name.endswith(".jsonl")), key=lambda f: f.name)


def content_hash() -> str:
  h = hashlib.sha256()
  for f in _files():
    h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
  return h.hexdigest()[:12]


def read_builtin() -> list[Problem]:
  """All bundled problems, in file order; errors name the package file and line."""
  files = _files()
  if not files:
    raise UserError(f"no bundled problems: stepcoder_jax/data/{FOLDER}/ has no *.jsonl files")
  out, seen = [], set()
  for f in files:
    where_file = f"stepcoder_jax/data/{FOLDER}/{f.name}"
    for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
      if not line.strip():
        continue
      try:
        p = Problem.from_json(line, where=f"{where_file}:{i}: ")
      except ValueError as e:
        if isinstance(e, RecordError):
          raise
        raise RecordError(f"{where_file}:{i}: not valid JSON ({e})") from None
      if p.id in seen:
        raise RecordError(f"{where_file}:{i}: record {p.id!r}: field 'id' is a duplicate")
      seen.add(p.id)
      out.append(p)
  return out


class StepcoderBuiltin(ProblemBuilder):
  """The bundled StepCoder-JAX problem set (APPS+ shape; call and stdio; introductory/interview)."""

  def extra_metadata(self) -> tfds.core.MetadataDict:
    return tfds.core.MetadataDict(content_hash=content_hash())

  def is_current(self) -> bool:
    """Whether the built files hold the bundled set as this package ships it."""
    return self.info.metadata.get("content_hash") == content_hash()

  def _split_generators(self, dl_manager):
    return {
      name: self._generate_examples(ps)
      for name, ps in split_by_suffix(read_builtin(), TEST_MODULUS).items()
      if ps
    }
