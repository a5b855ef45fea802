"""TFDS builders of every dataset we train or evaluate on, and helpers to build and read them.

Builders (one module each): ``apps_plus``, ``apps``, ``humaneval``, ``mbpp``,
``stepcoder_builtin``. They write array_record files and are read with
``builder.as_data_source()``, so TensorFlow is not needed. Importing this package imports
tensorflow_datasets (about half a second), so light code imports it lazily.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import sys

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


def builder_class(name: str):
  if name not in BUILDERS:
    raise UserError(f"unknown dataset {name!r}; choose from {sorted(BUILDERS)}")
  module, cls = BUILDERS[name]
  return getattr(importlib.import_module(module), cls)


def get_builder(name: str, data_dir: str):
  return builder_class(name)(data_dir=os.path.expanduser(data_dir), file_format="array_record")


def _is_prepared(builder) -> bool:
  return os.path.isfile(os.path.join(os.fspath(builder.data_path), "dataset_info.json"))


def prepare(name: str, data_dir: str, manual_dir: str | None = None, force: bool = False,
            progress: bool = False):
  """Build dataset ``name`` under ``data_dir`` (no-op when built, unless ``force``); the builder."""
  import tensorflow_datasets as tfds
  builder = get_builder(name, data_dir)
  if force and _is_prepared(builder):
    shutil.rmtree(os.fspath(builder.data_path))
    builder = get_builder(name, data_dir)
  if _is_prepared(builder):
    return builder
  manual = os.path.expanduser(manual_dir) if manual_dir else os.path.join(
      os.path.expanduser(data_dir), "downloads", "manual")
  if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
    builder.find_sources(manual)  # a clear UserError before TFDS starts
  tfds.display_progress_bar(progress)
  # TFDS prints its progress lines on stdout; keep stdout for command results (judge JSON).
  with contextlib.redirect_stdout(sys.stderr):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual))
  return builder


def read_split(name: str, split: str, data_dir: str, manual_dir: str | None = None
               ) -> list[Problem]:
  """Problems of ``split`` of dataset ``name``, building the dataset first when needed."""
  builder = prepare(name, data_dir, manual_dir)
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
