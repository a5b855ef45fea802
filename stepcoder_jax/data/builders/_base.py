"""Shared parts of our TFDS builders: one feature layout, manual-file lookup, example emission.

Every builder stores each problem as the Problem record serialised to a JSON string (``record``),
plus ``id``, ``test_kind`` and ``difficulty`` as plain text so they can be filtered without
parsing. Files are array_record (read with ``builder.as_data_source()``): TensorFlow is never
imported.

Manual files: a builder looks for its source files in ``MANUAL_DIR/<name>/`` and then in
``MANUAL_DIR/`` itself, so one folder can hold every dataset (e.g. ``../shared/data`` with
``humaneval/``, ``mbpp/``, ``apps/`` below it). When ``manual_dir`` is not given it defaults to
``DATA_DIR/downloads/manual``.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path
from typing import Iterable, Iterator

import tensorflow_datasets as tfds

from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError


class MissingSourceError(UserError):
  """A manual-download file is not where the builder looks for it."""


class _LocalDatasetInfo(tfds.core.DatasetInfo):
  """DatasetInfo of a dataset that exists only where it is built.

  TFDS looks up an unprepared dataset's info in its public GCS bucket, and makes a temporary
  directory for it even when GCS is off, which it never removes: one empty directory in $TMPDIR
  per builder made before the dataset is prepared. Ours are never in that bucket.
  """

  def initialize_from_bucket(self) -> None:
    return None


class ProblemBuilder(tfds.core.GeneratorBasedBuilder, abc.ABC):
  """Base of our builders; subclasses define ``_split_generators`` (returning Problem lists)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release: Problem records as JSON strings."}
  # File names or glob patterns, any of which makes the manual source present.
  SOURCE_PATTERNS: tuple[str, ...] = ()
  # What to download and from where; printed when the source is missing.
  SOURCE_HELP: str = ""

  def _info(self) -> tfds.core.DatasetInfo:
    return _LocalDatasetInfo(
      builder=self,
      description=(self.__class__.__doc__ or "").strip(),
      features=tfds.features.FeaturesDict(
        {
          "id": tfds.features.Text(),
          "test_kind": tfds.features.Text(),
          "difficulty": tfds.features.Text(),
          "record": tfds.features.Text(),  # Problem.to_json()
        }
      ),
      disable_shuffling=True,  # keep file order: splits and ids stay reproducible
      metadata=self.extra_metadata(),
    )

  def extra_metadata(self) -> tfds.core.MetadataDict | None:
    """Saved with the dataset (metadata.json) and restored when it is read; None: nothing."""
    return None

  def _generate_examples(self, problems: list[Problem]) -> Iterator[tuple[int, dict]]:
    for i, p in enumerate(problems):
      yield (
        i,
        {"id": p.id, "test_kind": p.test_kind, "difficulty": p.difficulty, "record": p.to_json()},
      )

  @classmethod
  def source_dirs(cls, manual_dir: str) -> list[Path]:
    base = Path(manual_dir).expanduser()
    return [base / cls.name, base]

  @classmethod
  def find_sources(cls, manual_dir: str) -> list[Path]:
    """Paths matching SOURCE_PATTERNS in the first source dir that has any; else a clear error."""
    for d in cls.source_dirs(manual_dir):
      if not d.is_dir():
        continue
      found = sorted({p for pat in cls.SOURCE_PATTERNS for p in d.glob(pat)})
      if found:
        return found
    dirs = " or ".join(str(d) for d in cls.source_dirs(manual_dir))
    raise MissingSourceError(
      f"dataset {cls.name!r}: no {' / '.join(cls.SOURCE_PATTERNS)} found in {dirs}. "
      f"{cls.SOURCE_HELP} Put it in {cls.source_dirs(manual_dir)[0]} (or pass --manual_dir)."
    )

  def _sources(self, dl_manager) -> list[Path]:
    # dl_manager._manual_dir is what DownloadConfig(manual_dir=...) gave; the public property
    # raises a bare AssertionError when empty, so we locate the files ourselves.
    manual = getattr(dl_manager, "_manual_dir", None)
    if manual is None:
      raise MissingSourceError(f"dataset {self.name!r} needs --manual_dir. {self.SOURCE_HELP}")
    return self.find_sources(os.fspath(manual))


def split_by_suffix(problems: Iterable[Problem], modulus: int) -> dict[str, list[Problem]]:
  """Test = problems whose id's numeric suffix is divisible by ``modulus``; train = the rest."""
  out: dict[str, list[Problem]] = {"train": [], "test": []}
  for p in problems:
    tail = p.id.rsplit("/", 1)[-1]
    if not tail.isdigit():
      raise UserError(f"record {p.id!r}: field 'id' must end in a number (NAME/NNNN) for the split")
    out["test" if int(tail) % modulus == 0 else "train"].append(p)
  return out
