"""Loading problems: from one file (any supported format) or from a TFDS builder.

``load_problem_file(path)`` reads, by auto-detection:
  * our JSONL (Problem.to_dict() per line),
  * HumanEval ``.jsonl`` / ``.jsonl.gz``,
  * MBPP ``.jsonl``,
  * APPS JSONL (one problem per line; ``solutions``/``input_output`` as JSON strings or decoded),
  * an APPS per-problem folder tree (``question.txt``, ``input_output.json`` ...), given the folder,
  * APPS+ ``.json`` (a JSON list, or an object of records) and any JSONL whose records match no
    format above (then the APPS+ spellings are tried, and a failure names the record's keys).
Errors name the file and the line (JSONL) or record index (JSON).

``load_problems(dataset, split)`` builds the TFDS dataset if needed and reads it back through
``builder.as_data_source()`` (array_record; no TensorFlow).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any, Iterator

from stepcoder_jax import cache
from stepcoder_jax.data import converters
from stepcoder_jax.data.record import Problem, RecordError
from stepcoder_jax.errors import UserError


def _open_text(path: str):
  if path.endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8")
  return open(path, encoding="utf-8")


def iter_jsonl(path: str) -> Iterator[tuple[int, dict]]:
  """(line number, parsed object) for each non-empty line; bad JSON names file and line."""
  with _open_text(path) as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield i, json.loads(line)
      except json.JSONDecodeError as e:
        raise RecordError(f"{path}:{i}: not valid JSON ({e.msg})") from None


def read_json_records(path: str) -> list[Any]:
  """Records of a .json file: a list, or an object whose values are records (keyed by id)."""
  try:
    with _open_text(path) as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    if e.msg != "Extra data":
      raise RecordError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    return [r for _, r in iter_jsonl(path)]  # JSON lines under a .json name
  if isinstance(data, list):
    return data
  if isinstance(data, dict):
    for key in ("data", "problems", "records"):  # a wrapper object around the list
      if isinstance(data.get(key), list):
        return data[key]
    if all(isinstance(v, dict) for v in data.values()):
      out = []
      for k, v in data.items():
        if not any(s in v for s in converters.APPS_PLUS_KEYS["id"]):
          v = {**v, "id": k}
        out.append(v)
      return out
  raise RecordError(
    f"{path}: expected a JSON list of records or an object of records, got {type(data).__name__}"
  )


def read_apps_plus(path: str) -> list[Problem]:
  """APPS+ data.json (or a JSONL of APPS+ records)."""
  if path.endswith((".jsonl", ".jsonl.gz")):
    recs = [r for _, r in iter_jsonl(path)]
  else:
    recs = read_json_records(path)
  return [converters.from_apps_plus(r, i, path) for i, r in enumerate(recs)]


def read_apps_dir(root: str) -> list[Problem]:
  """The original APPS layout: ROOT[/train|/test]/NNNN/{question.txt, input_output.json, ...}.

  Problem folders without input_output.json (some APPS test problems) have no tests and are
  skipped. The split name is taken from the parent folder when it is 'train' or 'test'.
  """
  out = []
  rootp = Path(root)
  folders = sorted(p.parent for p in rootp.rglob("question.txt"))
  if not folders:
    raise RecordError(f"{root}: no APPS problem folders (NNNN/question.txt) found")
  for d in folders:
    if not (d / "input_output.json").is_file():
      continue
    rec: dict[str, Any] = {
      "problem_id": d.name,
      "question": (d / "question.txt").read_text(encoding="utf-8"),
      "input_output": (d / "input_output.json").read_text(encoding="utf-8"),
    }
    if d.parent.name in ("train", "test"):
      rec["split"] = d.parent.name
    if (d / "solutions.json").is_file():
      rec["solutions"] = (d / "solutions.json").read_text(encoding="utf-8")
    if (d / "starter_code.py").is_file():
      rec["starter_code"] = (d / "starter_code.py").read_text(encoding="utf-8")
    if (d / "metadata.json").is_file():
      meta = json.loads((d / "metadata.json").read_text(encoding="utf-8"))
      rec["difficulty"] = meta.get("difficulty")
    out.append(converters.from_apps(rec, where=f"{d}: "))
  return out


def load_problem_file(path: str) -> list[Problem]:
  """All problems of one file (or APPS folder), converted to Problem; see the module docstring."""
  path = os.fspath(path)
  if os.path.isdir(path):
    return read_apps_dir(path)
  if not os.path.isfile(path):
    raise RecordError(f"{path}: no such file")
  if path.endswith((".json", ".json.gz")):
    recs = read_json_records(path)
    if recs and converters.detect_format(recs[0]) == "problem":
      return [Problem.from_dict(r, where=f"{path}: record {i}: ") for i, r in enumerate(recs)]
    return [converters.from_apps_plus(r, i, path) for i, r in enumerate(recs)]
  rows = list(iter_jsonl(path))
  if not rows:
    return []
  first = converters.detect_format(rows[0][1])
  if first is None:  # APPS+ spellings; errors name the record index and its keys
    return [converters.from_apps_plus(r, i, path) for i, (_, r) in enumerate(rows)]
  out = []
  for line, rec in rows:
    where = f"{path}:{line}: "
    fmt = converters.detect_format(rec)
    if fmt != first:
      keys = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
      raise RecordError(f"{where}record is not in the file's format ({first}); it has keys {keys}")
    out.append(converters.CONVERTERS[fmt](rec, where))
  return out


def default_data_dir() -> str:
  """Built TFDS datasets live in the project's cache root (moved by $STEPCODER_JAX_CACHE)."""
  return str(cache.cache_root() / "tfds")


def load_problems(
  dataset: str, split: str, data_dir: str | None = None, manual_dir: str | None = None
) -> list[Problem]:
  """Problems of a TFDS dataset split, building the dataset first when it is not built yet.

  Args:
    dataset: a builder name (see ``stepcoder_jax.data.builders.BUILDERS``).
    split: a split name of that builder (e.g. 'train', 'test').
    data_dir: where TFDS keeps built datasets; default `default_data_dir()`.
    manual_dir: where manually downloaded files are (APPS+ data.json, APPS, HumanEval, MBPP).
  """
  from stepcoder_jax.data import builders  # heavy (tensorflow_datasets); only when used

  return builders.read_split(
    dataset, split, data_dir=data_dir or default_data_dir(), manual_dir=manual_dir
  )


def add_dataset_arguments(parser, split: bool = True, purpose: str = "eval") -> None:
  """The shared flags --dataset/--split/--data_dir/--manual_dir (gin `dataset.*` fills the rest).

  `purpose` ('eval' or 'train', as in `dataset_from_args`) names the gin split the help gives as
  the default.
  """
  parser.add_argument(
    "--dataset",
    default=None,
    help="TFDS dataset name (apps_plus, apps, humaneval, mbpp, "
    "stepcoder_builtin); default: gin dataset.name",
  )
  if split:
    parser.add_argument(
      "--split", default=None, help=f"split to read; default: gin dataset.{purpose}_split"
    )
  parser.add_argument(
    "--data_dir",
    default=None,
    help="where built datasets live (default $STEPCODER_JAX_CACHE/tfds, "
    "$STEPCODER_JAX_CACHE defaulting to ~/.cache/stepcoder_jax)",
  )
  parser.add_argument(
    "--manual_dir",
    default=None,
    help="where manually downloaded files are (looked up as DIR/<dataset>/ then DIR/)",
  )


def dataset_from_args(args, purpose: str = "eval") -> tuple[str, str, str | None, str | None]:
  """(name, split, data_dir, manual_dir): flags first, then the gin `dataset` config.

  Args:
    args: parsed flags (any of dataset, split, data_dir, manual_dir may be missing or None).
    purpose: 'eval' or 'train': which gin split is the default.
  """
  from stepcoder_jax.data.config import DatasetConfig

  cfg = DatasetConfig()
  name = getattr(args, "dataset", None) or cfg.name
  split = getattr(args, "split", None) or (
    cfg.train_split if purpose == "train" else cfg.eval_split
  )
  data_dir = getattr(args, "data_dir", None) or cfg.data_dir
  manual_dir = getattr(args, "manual_dir", None) or cfg.manual_dir
  return name, split, data_dir, manual_dir


def problems_from_args(args, purpose: str = "eval") -> list[Problem]:
  """Problems named by --problems FILE when given, else by --dataset/--split (TFDS); none at all
  is a UserError (every command needs some: an empty file is a mistake, not a result)."""
  path = getattr(args, "problems", None)
  if path:
    problems, source = load_problem_file(path), path
  else:
    name, split, data_dir, manual_dir = dataset_from_args(args, purpose)
    problems = load_problems(name, split, data_dir=data_dir, manual_dir=manual_dir)
    source = f"dataset {name} split {split!r}"
  if not problems:
    raise UserError(f"{source}: no problems")
  return problems
