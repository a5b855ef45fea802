"""TFDS builder ``humaneval``: OpenAI HumanEval (164 problems), one split ``test``."""

from __future__ import annotations

from stepcoder_jax.data import load
from stepcoder_jax.data.builders._base import ProblemBuilder


class Humaneval(ProblemBuilder):
  """HumanEval (Chen et al. 2021): function completion judged by check(candidate) asserts."""

  SOURCE_PATTERNS = ("HumanEval.jsonl.gz", "HumanEval.jsonl")
  SOURCE_HELP = "Download data/HumanEval.jsonl.gz from https://github.com/openai/human-eval."
  MANUAL_DOWNLOAD_INSTRUCTIONS = SOURCE_HELP + " Place it in MANUAL_DIR/humaneval/."

  def _split_generators(self, dl_manager):
    path = self._sources(dl_manager)[0]
    return {"test": self._generate_examples(load.load_problem_file(str(path)))}
