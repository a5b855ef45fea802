"""TFDS builder ``mbpp``: MBPP (974 problems) with its standard splits by task_id.

prompt 1-10 (few-shot examples), test 11-510, validation 511-600, train 601-974
(Austin et al. 2021, section 2.1).
"""

from __future__ import annotations

from stepcoder_jax.data import load
from stepcoder_jax.data.builders._base import ProblemBuilder
from stepcoder_jax.errors import UserError

# split -> inclusive task_id range
SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


def split_of(task_id: int) -> str | None:
  for name, (lo, hi) in SPLITS.items():
    if lo <= task_id <= hi:
      return name
  return None


class Mbpp(ProblemBuilder):
  """MBPP (Mostly Basic Python Problems): a task text, a reference function and three asserts."""

  SOURCE_PATTERNS = ("mbpp.jsonl",)
  SOURCE_HELP = "Download mbpp/mbpp.jsonl from https://github.com/google-research/google-research."
  MANUAL_DOWNLOAD_INSTRUCTIONS = SOURCE_HELP + " Place it in MANUAL_DIR/mbpp/."

  def _split_generators(self, dl_manager):
    path = self._sources(dl_manager)[0]
    by_split = {name: [] for name in SPLITS}
    for p in load.load_problem_file(str(path)):
      task_id = int(p.id.rsplit("/", 1)[-1])
      name = split_of(task_id)
      if name is None:
        raise UserError(f"{path}: record {p.id!r}: field 'task_id' {task_id} is outside 1-974")
      by_split[name].append(p)
    return {name: self._generate_examples(ps) for name, ps in by_split.items() if ps}
