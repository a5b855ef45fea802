"""The one problem record shared by every dataset (APPS+, APPS, HumanEval, MBPP, bundled set).

Judges, prompts and the curriculum read only this record. It is plain data (JSON-serializable) so it
can travel through TFDS (as a JSON string feature), worker pipes and checkpoints unchanged.

Test kinds:
  * ``stdio``  -- APPS standard input -> standard output. ``inputs``/``outputs`` are lists of
    strings.
  * ``call``   -- APPS call-based. ``fn_name`` names a top-level function, or a method of
                  ``class Solution``; ``inputs`` is a list of argument lists, ``outputs`` a list of
                  expected return values (JSON values).
  * ``assert`` -- HumanEval ``check(candidate)`` with ``entry_point``, or MBPP assert lines.
                  ``test_code`` holds the asserts, ``test_setup_code`` runs before them. For
                  HumanEval, ``test_code`` defines ``check`` and ``entry_point`` names the function.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from typing import Any

from stepcoder_jax.errors import UserError

TEST_KINDS = ("stdio", "call", "assert")
DIFFICULTIES = ("introductory", "interview", "competition", "unknown")


class RecordError(UserError, ValueError):
  """A problem record is malformed; the message names the source, record and field."""


@dataclasses.dataclass
class Problem:
  id: str
  question: str
  test_kind: str
  canonical_solution: str = ""
  starter_code: str = ""
  fn_name: str | None = None
  inputs: list[Any] = dataclasses.field(default_factory=list)
  outputs: list[Any] = dataclasses.field(default_factory=list)
  test_code: str = ""
  test_setup_code: str = ""
  entry_point: str | None = None
  difficulty: str = "unknown"
  source: str = ""

  def __post_init__(self):
    self.validate()

  @property
  def num_tests(self) -> int:
    """Tests as the judge counts them: one per input (stdio/call); a HumanEval
    ``check(candidate)`` is one test (one call); each MBPP assert is one test (run on its own)."""
    if self.test_kind != "assert":
      return len(self.inputs)
    try:
      tree = ast.parse(self.test_code)
    except SyntaxError:
      return 1
    if self.entry_point and any(
      isinstance(s, ast.FunctionDef) and s.name == "check" for s in tree.body
    ):
      return 1
    return max(1, sum(isinstance(s, ast.Assert) for s in tree.body))

  def validate(self, where: str = "") -> None:
    """Raise RecordError naming the record and field when the record cannot be judged."""
    at = f"{where}record {self.id!r}" if where else f"record {self.id!r}"

    def bad(field, why):
      raise RecordError(f"{at}: field '{field}' {why}")

    if not isinstance(self.id, str) or not self.id:
      bad("id", "must be a non-empty string")
    if not isinstance(self.question, str):
      bad("question", "must be a string")
    if self.test_kind not in TEST_KINDS:
      bad("test_kind", f"is {self.test_kind!r}; expected one of {TEST_KINDS}")
    if self.difficulty not in DIFFICULTIES:
      bad("difficulty", f"is {self.difficulty!r}; expected one of {DIFFICULTIES}")
    if self.test_kind in ("stdio", "call"):
      if not isinstance(self.inputs, list) or not isinstance(self.outputs, list):
        bad("inputs", "and 'outputs' must be lists")
      if len(self.inputs) != len(self.outputs):
        bad("outputs", f"has {len(self.outputs)} entries but 'inputs' has {len(self.inputs)}")
      if not self.inputs:
        bad("inputs", "is empty: a problem needs at least one test")
    if self.test_kind == "call":
      if not self.fn_name:
        bad("fn_name", "is required for call-based tests")
      if not all(isinstance(a, list) for a in self.inputs):
        bad("inputs", "must be a list of argument lists for call-based tests")
    if self.test_kind == "stdio":
      if not all(isinstance(s, str) for s in self.inputs + self.outputs):
        bad("inputs", "and 'outputs' must be strings for stdio tests")
    if self.test_kind == "assert" and not self.test_code.strip():
      bad("test_code", "is empty for assert-style tests")

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), ensure_ascii=False)

  @classmethod
  def from_dict(cls, d: dict[str, Any], where: str = "") -> "Problem":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise RecordError(f"{where}record {d.get('id')!r}: unknown field(s) {unknown}")
    try:
      return cls(**d)
    except TypeError as e:  # missing required field
      raise RecordError(f"{where}record {d.get('id')!r}: {e}") from None

  @classmethod
  def from_json(cls, s: str, where: str = "") -> "Problem":
    return cls.from_dict(json.loads(s), where)


def read_jsonl(path: str) -> list[Problem]:
  """Read problem records (one JSON object per line); errors name file and line."""
  out = []
  with open(path, encoding="utf-8") as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        d = json.loads(line)
      except json.JSONDecodeError as e:
        raise RecordError(f"{path}:{i}: not valid JSON ({e.msg})") from None
      out.append(Problem.from_dict(d, where=f"{path}:{i}: "))
  return out


def write_jsonl(path: str, problems) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for p in problems:
      f.write(p.to_json() + "\n")
