"""CCCS: the Curriculum of Code Completion Subtasks (StepCoder, arXiv 2402.01391, Sec. 3.2).

A long program is hard to explore from scratch, so early in training the prompt carries the
canonical solution up to a late conditional statement and the policy only writes the tail. As the
policy succeeds, the given prefix shrinks, one stage at a time, until the prompt is the question
alone (s* = 0, plain RL).

Conditional statements (E_i). We count the ``ast`` compound statements that branch or repeat:
``if`` (each ``elif`` is its own nested ``If`` node, so it counts too), ``for``/``async for``,
``while``, ``try`` / ``try ... except*``, ``match`` and ``with``/``async with`` (the brief's set:
``with`` scopes a block whose body may raise and skip the rest, so it is a control point in the
same sense). Nested statements count as well: a stage boundary inside a loop body is a smaller
subtask than one before the loop. Function and class definitions are not conditionals, and neither
are expression-level conditionals (``a if c else b``, comprehension filters): a prefix cannot end
inside an expression at a line start.

Stages. With E statements sorted by their start there are S = ceil(sqrt(E)) stages, each spanning
ceil(E / S) statements: stage g covers statements [g * span, (g + 1) * span). Training on a problem
starts at the latest stage s* = S' - 1 (S' = the number of non-empty stages, normally S), whose
prefix is the solution up to the start of statement s* * span. Stage s* = 0 is the question alone
(no prefix): it covers the code before the first conditional too.

Line snapping. A compound statement always begins a logical line, so its start is the first
non-blank character of a line. The prefix ends at the start of that line (after the previous
newline) rather than at the statement keyword: tokenizers merge indentation into whitespace tokens,
so ending the prompt in the middle of the indentation would force an unnatural token split; the
model writes the indentation itself. Line numbers of the completion then count from a fresh line,
as the execution contract expects.

The per-problem state (stage, attempts, passes on the current stage) is plain data and serializes
to JSON exactly, for checkpoints.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import math
from typing import Iterable, Sequence

import numpy as np

from stepcoder_jax.data.record import Problem
from stepcoder_jax.rl.config import CCCSConfig

# The statement kinds that count as conditional statements (see the module docstring).
CONDITIONAL_NODES: tuple[type, ...] = tuple(
    getattr(ast, name) for name in
    ("If", "For", "AsyncFor", "While", "Try", "TryStar", "Match", "With", "AsyncWith")
    if hasattr(ast, name))

STATE_VERSION = 1


def _line_starts(text: str) -> list[int]:
  """Char offset of the start of each line (0-based list; line n is at index n - 1)."""
  starts = [0]
  for i, ch in enumerate(text):
    if ch == "\n":
      starts.append(i + 1)
  return starts


def _char_col(line: str, byte_col: int) -> int:
  """ast columns count UTF-8 bytes; convert one to a character column of `line`."""
  return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def conditional_statements(solution: str) -> list[tuple[int, int]]:
  """Char spans (start, end) of the conditional statements of `solution`, sorted by start.

  `start` is the offset of the statement keyword, `end` the offset just after its last character.
  A solution that does not parse (e.g. Python 2 code in APPS) has no statements: it simply stays
  at s* = 0.
  """
  try:
    tree = ast.parse(solution)
  except (SyntaxError, ValueError):
    return []
  starts = _line_starts(solution)
  lines = solution.split("\n")
  spans = []
  for node in ast.walk(tree):
    if isinstance(node, CONDITIONAL_NODES):
      s = starts[node.lineno - 1] + _char_col(lines[node.lineno - 1], node.col_offset)
      e = starts[node.end_lineno - 1] + _char_col(lines[node.end_lineno - 1], node.end_col_offset)
      spans.append((s, e))
  return sorted(spans)


def num_stages(num_statements: int) -> int:
  """ceil(sqrt(E)) stages; a program without conditionals has one stage (s* = 0)."""
  return max(1, math.ceil(math.sqrt(num_statements)))


def stage_span(num_statements: int) -> int:
  """Statements per stage: ceil(E / ceil(sqrt(E)))."""
  if num_statements == 0:
    return 0
  return math.ceil(num_statements / num_stages(num_statements))


@dataclasses.dataclass(frozen=True)
class Plan:
  """The curriculum of one canonical solution.

  Attributes:
    statements: char spans of the conditional statements, sorted.
    stage_starts: for each stage g, the char offset where its prefix ends (0 for g = 0, else the
      line start of statement g * span).
  """
  statements: tuple[tuple[int, int], ...]
  stage_starts: tuple[int, ...]

  @property
  def num_stages(self) -> int:
    return len(self.stage_starts)


def plan(solution: str) -> Plan:
  """Statements and stage boundaries of a canonical solution."""
  stmts = conditional_statements(solution)
  e = len(stmts)
  if e == 0:
    return Plan((), (0,))
  span = stage_span(e)
  bounds = [0]
  for g in range(1, num_stages(e)):
    k = g * span
    if k >= e:  # never happens for ceil(sqrt) stages, but keep stages non-empty regardless
      break
    bounds.append(solution.rfind("\n", 0, stmts[k][0]) + 1)  # snap to the line start
  return Plan(tuple(stmts), tuple(bounds))


def prefix_at(solution: str, p: Plan, stage: int) -> str:
  """The prompt prefix of `stage`: the solution up to that stage's first statement's line."""
  return solution[:p.stage_starts[stage]]


def sampling_weights(problems: Sequence[Problem], weight_power: float) -> np.ndarray:
  """Probabilities proportional to (1 + E_i) ** weight_power (0 = uniform).

  The paper samples structurally complex programs more often; the +1 keeps problems without
  conditionals in the pool.
  """
  e = np.array([len(conditional_statements(p.canonical_solution)) for p in problems], np.float64)
  w = (1.0 + e) ** weight_power
  return w / w.sum()


# ----------------------------------------------------------------------------- token positions


def char_span_to_tokens(offsets: Sequence[tuple[int, int]], start: int,
                        end: int) -> tuple[int, int]:
  """Token index range [i, j) of the tokens that overlap chars [start, end).

  `offsets` is a fast tokenizer's offset mapping (char (start, end) per token). Special tokens with
  an empty span never overlap anything.
  """
  idx = [t for t, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
  if not idx:
    return (0, 0)
  return (idx[0], idx[-1] + 1)


def trainable_token_mask(offsets: Sequence[tuple[int, int]], prompt_chars: int) -> np.ndarray:
  """int8 mask of the tokens that may be trained on: those lying wholly after the prompt.

  The prompt (question + CCCS prefix) is given, never trained on: a token that starts inside the
  prompt is 0 even if it runs past the boundary (a merge across the prompt/completion seam).
  Empty-span special tokens after the prompt (EOS) are trainable; before it, they are not.
  """
  out = np.zeros(len(offsets), np.int8)
  seen_prompt_end = False
  for t, (a, b) in enumerate(offsets):
    if b > a:
      seen_prompt_end = a >= prompt_chars
    out[t] = seen_prompt_end
  return out


# ----------------------------------------------------------------------------- the curriculum


@dataclasses.dataclass
class StageState:
  """Curriculum state of one problem."""
  stage: int
  num_stages: int
  attempts: int = 0
  passes: int = 0


class Curriculum:
  """Per-problem CCCS stages, updated from pass/fail outcomes.

  A problem is registered the first time it is seen (`prefix`, `stage` or `register`) and starts at
  its latest stage. `record(problem_id, passed)` accumulates outcomes on the current stage; when at
  least `min_attempts` have been seen and passes / attempts strictly exceeds rho, the start moves
  one stage towards the beginning and the counters reset. Disabled, every problem is at s* = 0.
  """

  def __init__(self, cfg: CCCSConfig | None = None):
    self.cfg = cfg or CCCSConfig()
    self.states: dict[str, StageState] = {}
    self._plans: dict[str, Plan] = {}  # derived from the solution; not serialized

  def _plan(self, problem: Problem) -> Plan:
    p = self._plans.get(problem.id)
    if p is None:
      p = self._plans[problem.id] = plan(problem.canonical_solution)
    return p

  def register(self, problem: Problem) -> StageState:
    st = self.states.get(problem.id)
    if st is None:
      n = self._plan(problem).num_stages if self.cfg.enabled else 1
      st = self.states[problem.id] = StageState(stage=n - 1, num_stages=n)
    return st

  def stage(self, problem: Problem) -> int:
    """Current s* of `problem` (registering it on first sight)."""
    st = self.register(problem)
    return st.stage if self.cfg.enabled else 0

  def prefix(self, problem: Problem) -> str:
    """The canonical-solution prefix given in the prompt ('' at s* = 0)."""
    s = self.stage(problem)
    return prefix_at(problem.canonical_solution, self._plan(problem), s) if s else ""

  def record(self, problem_id: str, passed: bool) -> bool:
    """Count one attempt on the current stage; return True when the stage moved."""
    st = self.states.get(problem_id)
    if st is None:
      raise KeyError(f"cccs: problem {problem_id!r} was never given a prompt (call prefix first)")
    st.attempts += 1
    st.passes += int(bool(passed))
    if (self.cfg.enabled and st.stage > 0 and st.attempts >= self.cfg.min_attempts and
        st.passes / st.attempts > self.cfg.rho):
      st.stage -= 1
      st.attempts = st.passes = 0
      return True
    return False

  def histogram(self) -> dict[int, int]:
    """Number of problems at each stage, for metrics."""
    h: dict[int, int] = {}
    for st in self.states.values():
      h[st.stage] = h.get(st.stage, 0) + 1
    return dict(sorted(h.items()))

  def sampling_weights(self, problems: Sequence[Problem]) -> np.ndarray:
    """As the module-level `sampling_weights`, from the cached plans."""
    e = np.array([len(self._plan(p).statements) for p in problems], np.float64)
    w = (1.0 + e) ** self.cfg.weight_power
    return w / w.sum()

  def to_json(self) -> str:
    return json.dumps({
        "version": STATE_VERSION,
        "enabled": self.cfg.enabled,
        "problems": {k: dataclasses.asdict(v) for k, v in sorted(self.states.items())},
    }, sort_keys=True)

  @classmethod
  def from_json(cls, text: str, cfg: CCCSConfig | None = None) -> "Curriculum":
    d = json.loads(text)
    if d.get("version") != STATE_VERSION:
      raise ValueError(f"cccs state: version {d.get('version')!r}, expected {STATE_VERSION}")
    cur = cls(cfg)
    cur.states = {k: StageState(**v) for k, v in d["problems"].items()}
    return cur

  def register_all(self, problems: Iterable[Problem]) -> None:
    for p in problems:
      self.register(p)
