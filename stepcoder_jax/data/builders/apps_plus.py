"""TFDS builder ``apps_plus``: APPS+ of the StepCoder paper (Dou et al. 2024).

Source: ``data.json`` from https://github.com/Ablustrund/APPS_Plus (its README links the file;
7,413 problems: introductory 2,889, interview 3,592, competition 572). It is a manual download:
put it in ``MANUAL_DIR/apps_plus/data.json`` (or ``MANUAL_DIR/data.json``). The key names are not
documented, so every field accepts several spellings (see ``converters.APPS_PLUS_KEYS``); a record
that matches none fails naming its index and keys.

Split (deterministic, stratified by difficulty): within each difficulty level, taking problems in
file order, positions 0, 10, 20, ... of that level go to ``test`` and the rest to ``train``. So the
test split is ceil(n_level / 10) problems per level (707 of 7,413 for the release above) and has the
same difficulty mix as the whole set.
"""

from __future__ import annotations

from collections import defaultdict

from stepcoder_jax.data import load
from stepcoder_jax.data.builders._base import ProblemBuilder
from stepcoder_jax.data.record import Problem

TEST_EVERY = 10


def split_by_difficulty(problems: list[Problem], every: int = TEST_EVERY) -> dict[str, list]:
  """Every ``every``-th problem of each difficulty level (from its first) is test; others train."""
  seen: dict[str, int] = defaultdict(int)
  out: dict[str, list[Problem]] = {"train": [], "test": []}
  for p in problems:
    k = seen[p.difficulty]
    seen[p.difficulty] += 1
    out["test" if k % every == 0 else "train"].append(p)
  return out


class AppsPlus(ProblemBuilder):
  """APPS+: APPS refined for RL from unit tests (StepCoder); stdio and call-based problems."""

  SOURCE_PATTERNS = ("data.json", "data.jsonl")
  SOURCE_HELP = (
    "Download data.json of APPS+ (link in the README of https://github.com/Ablustrund/APPS_Plus)."
  )
  MANUAL_DOWNLOAD_INSTRUCTIONS = SOURCE_HELP + " Place it in MANUAL_DIR/apps_plus/data.json."

  def _split_generators(self, dl_manager):
    path = self._sources(dl_manager)[0]
    problems = load.read_apps_plus(str(path))
    return {name: self._generate_examples(ps) for name, ps in split_by_difficulty(problems).items()}
