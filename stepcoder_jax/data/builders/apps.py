"""TFDS builder ``apps``: the original APPS format (Hendrycks et al. 2021).

Sources (in MANUAL_DIR/apps/ or MANUAL_DIR/): JSONL files (one APPS record per line, with
``solutions`` and ``input_output`` as JSON strings or decoded), or the per-problem folder tree
``train/NNNN/``, ``test/NNNN/`` (question.txt, solutions.json, input_output.json, metadata.json,
starter_code.py), possibly under an ``APPS/`` folder.

Splits: a record's ``split`` field (or, for folders, the parent folder name; for JSONL files named
``train*``/``test*``, the file name) decides; otherwise the problem goes to ``train``. Only splits
that have problems are created. Problems without tests (some APPS test folders lack
input_output.json) are skipped.
"""

from __future__ import annotations

from pathlib import Path

from stepcoder_jax.data import converters, load
from stepcoder_jax.data.builders._base import ProblemBuilder


def _split_for(path: Path, rec: dict) -> str:
  if rec.get("split") in ("train", "test"):
    return rec["split"]
  for name in ("train", "test"):
    if path.name.startswith(name):
      return name
  return "train"


def read_sources(paths: list[Path]) -> dict[str, list]:
  by_split: dict[str, list] = {}
  for path in paths:
    if path.is_dir():
      for p in load.read_apps_dir(str(path)):
        split = p.id.split("/")[1] if p.id.count("/") == 2 else "train"
        by_split.setdefault(split, []).append(p)
      continue
    for line, rec in load.iter_jsonl(str(path)):
      if isinstance(rec, dict) and not str(rec.get("input_output") or "").strip():
        continue  # no tests: nothing to judge
      rec = dict(rec)
      rec["split"] = _split_for(path, rec)
      p = converters.from_apps(rec, where=f"{path}:{line}: ")
      by_split.setdefault(rec["split"], []).append(p)
  return by_split


class Apps(ProblemBuilder):
  """APPS: competitive-programming problems (stdin/stdout and call-based), by difficulty."""

  SOURCE_PATTERNS = ("*.jsonl", "*.jsonl.gz", "train", "test", "APPS")
  SOURCE_HELP = (
    "Get APPS from https://github.com/hendrycks/apps (the APPS.tar.gz folder tree) "
    "or a JSONL export of it (e.g. codeparrot/apps train.jsonl/test.jsonl)."
  )
  MANUAL_DOWNLOAD_INSTRUCTIONS = SOURCE_HELP + " Place it in MANUAL_DIR/apps/."

  def _split_generators(self, dl_manager):
    by_split = read_sources(self._sources(dl_manager))
    return {name: self._generate_examples(ps) for name, ps in sorted(by_split.items())}
