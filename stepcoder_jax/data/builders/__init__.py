"""TFDS builders of every dataset we train or evaluate on, and helpers to build and read them.

Builders (one module each): ``apps_plus``, ``apps``, ``humaneval``, ``mbpp``,
``stepcoder_builtin``. They write array_record files and are read with
``builder.as_data_source()``, so TensorFlow is not needed. Importing this package imports
tensorflow_datasets (about half a second), so light code imports it lazily.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import logging
import os
import shutil
import sys

from stepcoder_jax import cache
from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError

# dataset name -> (module, class)
BUILDERS = {
  "apps_plus": ("stepcoder_jax.data.builders.apps_plus", "AppsPlus"),
  "apps": ("stepcoder_jax.data.builders.apps", "Apps"),
  "humaneval": ("stepcoder_jax.data.builders.humaneval", "Humaneval"),
  "mbpp": ("stepcoder_jax.data.builders.mbpp", "Mbpp"),
  "stepcoder_builtin": ("stepcoder_jax.data.builders.stepcoder_builtin", "StepcoderBuiltin"),
}

log = logging.getLogger(__name__)


def builder_class(name: str):
  if name not in BUILDERS:
    raise UserError(f"unknown dataset {name!r}; choose from {sorted(BUILDERS)}")
  module, cls = BUILDERS[name]
  return getattr(importlib.import_module(module), cls)


def get_builder(name: str, data_dir: str):
  return builder_class(name)(data_dir=os.path.expanduser(data_dir), file_format="array_record")


def _is_prepared(builder) -> bool:
  """TFDS's own test is "the version directory exists"; ours also wants its dataset_info.json.

  TFDS builds in ``incomplete.XXXXXX_<version>`` and renames it into place when done, so a build
  killed half way leaves only that sibling. A version directory without dataset_info.json (a
  removal or copy cut short) would make TFDS skip the build and fail when reading: it counts as
  not built, and `prepare` replaces it.
  """
  return os.path.isfile(os.path.join(os.fspath(builder.data_path), "dataset_info.json"))


def _is_current(builder) -> bool:
  """A built dataset made from the sources this package has (the bundled set's content hash)."""
  return getattr(builder, "is_current", lambda: True)()


def _discard(path: str) -> None:
  """Remove a directory, first renaming it out of the way so a kill mid-removal leaves nothing
  under the dataset's own name."""
  if not os.path.lexists(path):
    return
  parent, base = os.path.split(path.rstrip(os.sep))
  doomed = os.path.join(parent, f"incomplete.discard{os.getpid()}_{base}")
  os.rename(path, doomed)
  shutil.rmtree(doomed, ignore_errors=True)


def _remove_leftovers(builder) -> None:
  """The unfinished build directories of this dataset version (call while holding its lock)."""
  version_dir = os.fspath(builder.data_path)
  parent, base = os.path.split(version_dir)
  for d in glob.glob(os.path.join(glob.escape(parent), f"incomplete.*_{glob.escape(base)}")):
    shutil.rmtree(d, ignore_errors=True)
  if os.path.lexists(version_dir) and not _is_prepared(builder):
    _discard(version_dir)


def _lock_path(builder) -> str:
  """``<version dir>.lock`` beside the version directory (TFDS ignores non-version names)."""
  return os.fspath(builder.data_path).rstrip(os.sep) + ".lock"


def prepare(
  name: str,
  data_dir: str,
  manual_dir: str | None = None,
  force: bool = False,
  progress: bool = False,
):
  """Build dataset ``name`` under ``data_dir`` (no-op when built, unless ``force``); the builder.

  Safe with many processes on one machine or on a shared file system: the build runs under an
  exclusive lock on a file beside the dataset, so one process builds and the others wait and then
  read its result. Data dirs that are not local paths (``gs://...``) get no lock; there, a
  process that loses the final rename to another builder reads the winner's dataset.
  """
  data_dir = os.path.expanduser(data_dir)
  builder = get_builder(name, data_dir)
  if _is_prepared(builder) and not force and _is_current(builder):
    return builder
  remote = "://" in data_dir
  lock = (
    contextlib.nullcontext()
    if remote
    else cache.exclusive(_lock_path(builder), what=f"building dataset {name!r}")
  )
  with lock:
    builder = get_builder(name, data_dir)  # what the lock holder before us left
    if _is_prepared(builder) and (force or not _is_current(builder)):
      _discard(os.fspath(builder.data_path))
      builder = get_builder(name, data_dir)
    if _is_prepared(builder):
      return builder
    if not remote:
      _remove_leftovers(builder)
    _build(builder, name, data_dir, manual_dir, progress)
  return get_builder(name, data_dir)


def _build(builder, name: str, data_dir: str, manual_dir: str | None, progress: bool) -> None:
  import tensorflow_datasets as tfds

  manual = (
    os.path.expanduser(manual_dir) if manual_dir else os.path.join(data_dir, "downloads", "manual")
  )
  if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
    builder.find_sources(manual)  # a clear UserError before TFDS starts
  log.info("building dataset %s in %s", name, builder.data_path)
  tfds.display_progress_bar(progress)
  try:
    # TFDS prints its progress lines on stdout; keep stdout for command results (judge JSON).
    with contextlib.redirect_stdout(sys.stderr):
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
  except Exception:
    if not _is_prepared(get_builder(name, data_dir)):
      raise
    log.info("dataset %s was finished by another process; reading theirs", name)


def read_split(
  name: str, split: str, data_dir: str, manual_dir: str | None = None
) -> list[Problem]:
  """Problems of ``split`` of dataset ``name``, building the dataset first when needed."""
  builder = prepare(name, data_dir, manual_dir)
  splits = sorted(builder.info.splits.keys())
  if not splits and _is_prepared(builder):
    # Seen once on a 2-process pod building into an empty cache: a builder made while another
    # process finished the build read no splits although dataset_info.json is there. A builder
    # made now reads the finished files.
    log.info("dataset %s: re-reading %s after a concurrent build", name, builder.data_path)
    builder = get_builder(name, data_dir)
    splits = sorted(builder.info.splits.keys())
  if split not in splits:
    raise UserError(f"dataset {name!r} has no split {split!r}; it has {splits}")
  source = builder.as_data_source(split=split)
  out = []
  for i in range(len(source)):
    ex = source[i]
    rec = ex["record"]
    rec = rec.decode("utf-8") if isinstance(rec, bytes) else rec
    out.append(Problem.from_json(rec, where=f"{builder.data_path} ({split}) example {i}: "))
  return out
