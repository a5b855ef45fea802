"""CCCS: the Curriculum of Code Completion Subtasks (StepCoder, arXiv 2402.01391, Sec. 3.2).

A long program is hard to explore from scratch, so early in training the prompt carries the
canonical solution up to a late conditional statement and the policy only writes the tail. As the
policy succeeds, the given prefix shrinks, one stage at a time, until the prompt is the question
alone (s* = 0, plain RL).

Conditional statements (E_i), `cccs.statements`:
  * ``'if'`` (the default): ``if`` statements, each ``elif`` included (it is its own nested ``If``
    node). The paper samples start points "at the beginning of conditional statements"; in Python
    that names the ``if`` statement, so this is the set its wording supports.
  * ``'branching'``: also the other compound statements that branch or repeat: ``for`` / ``async
    for``, ``while``, ``try`` / ``try ... except*``, ``match``, ``with`` / ``async with`` (a wider
    reading: more start points for loop-heavy stdio programs that have few ``if``\\ s).
Nested statements count as well. Function and class definitions are not conditionals, and neither
are expression-level conditionals (``a if c else b``, comprehension filters): a prefix cannot end
inside an expression at a line start.

Stages, as the paper defines them. With E statements in source order there are S = ceil(sqrt(E))
start points, spaced span = ceil(E / S) statements apart and counted back from the last one:
statements E-1, E-1-span, ..., S of them (kept >= 0). After them comes the final stage, s* = 0,
the question alone. E = 0 gives only the final stage; E = 1 gives statement 0, then s* = 0; E = 9
gives statements 8, 5, 2, then s* = 0. A start point whose prefix would be empty (the solution
opens with it) is the final stage already and is not repeated.

Numbering. A problem's `stage` in the state is its position in training order: 0 is the first
subtask (the shortest tail), `num_stages - 1` is s* = 0 (the question alone; plain RL). With CCCS
disabled every problem has one stage, stage 0, which is s* = 0.

"More frequent sampling" (the paper: programs with more conditional statements need more
independent paths). We read it as the number of start points per problem, ceil(sqrt(E)): a
complex program gets more subtasks, so it is sampled on more stages. It is not a re-weighting of
the dataset: every ablation arm draws the same problems in the same order (trainer.
choose_problems), so CCCS changes only the prompts.

Bookkeeping. `record(problem_id, stage, passed)` counts a verdict only toward the stage its prompt
was built at: rows drawn at an easier stage that are judged after the problem advanced are
ignored (counted in `ignored`). When at least `min_attempts` verdicts were seen on the current
stage and passes / attempts strictly exceeds rho, the problem advances one stage and the counters
reset. `skip_stage` advances without a verdict (a stage whose prompt can never fit).

Schedules (`cccs.schedule`). 'paper' is the rule above and nothing else: a problem only moves
earlier (a longer tail to write). 'adaptive' adds the way back: when every sample of a problem's
group in one rollout failed at its current stage (`record_group`), the problem moves one stage
later (a shorter tail) and that stage's counters restart, so a problem whose tail is too long for
the policy returns to where some samples pass and the group has an advantage to learn from. It
never moves before stage 0, the first subtask. This is the per-problem, success-driven reading of
partial-solution curricula (BREAD gives a longer hint when a whole group fails; SEELE aims each
problem at about half success); the paper's own rule stays the default.

Line snapping. A compound statement always begins a logical line, so its start is the first
non-blank character of a line. The prefix ends at the start of that line (after the previous
newline) rather than at the statement keyword: tokenizers merge indentation into whitespace tokens,
so ending the prompt in the middle of the indentation would force an unnatural token split; the
model writes the indentation itself. Line numbers of the completion then count from a fresh line,
as the execution contract expects.

The per-problem state (stage, attempts, passes on the current stage) is plain data and serializes
to versioned JSON exactly, for checkpoints.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from typing import Iterable, Sequence

from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError
from stepcoder_jax.rl.config import CCCSConfig


def _nodes(*names: str) -> tuple[type, ...]:
  return tuple(getattr(ast, n) for n in names if hasattr(ast, n))


# cccs.statements -> the ast node kinds counted as conditional statements (module docstring).
STATEMENT_KINDS: dict[str, tuple[type, ...]] = {
  "if": _nodes("If"),
  "branching": _nodes(
    "If", "For", "AsyncFor", "While", "Try", "TryStar", "Match", "With", "AsyncWith"
  ),
}

# 2: stages in training order and the statement set in the state (1 counted down to s* = 0).
STATE_VERSION = 2


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


def conditional_statements(solution: str, statements: str = "if") -> list[tuple[int, int]]:
  """Char spans (start, end) of the counted statements of `solution`, sorted by start.

  `start` is the offset of the statement keyword, `end` the offset just after its last character.
  A solution that does not parse (e.g. Python 2 code in APPS) has no statements: it simply has the
  final stage only.
  """
  kinds = STATEMENT_KINDS[statements]
  try:
    tree = ast.parse(solution)
  except (SyntaxError, ValueError):
    return []
  starts = _line_starts(solution)
  lines = solution.split("\n")
  spans = []
  for node in ast.walk(tree):
    if isinstance(node, kinds):
      s = starts[node.lineno - 1] + _char_col(lines[node.lineno - 1], node.col_offset)
      e = starts[node.end_lineno - 1] + _char_col(lines[node.end_lineno - 1], node.end_col_offset)
      spans.append((s, e))
  return sorted(spans)


def start_points(num_statements: int) -> list[int]:
  """Statement indexes where the subtasks start, in training order (s* = 0 not included).

  ceil(sqrt(E)) of them, ceil(E / ceil(sqrt(E))) statements apart, from the last statement back.
  """
  if num_statements <= 0:
    return []
  count = math.ceil(math.sqrt(num_statements))
  span = math.ceil(num_statements / count)
  return [k for k in range(num_statements - 1, -1, -span)][:count]


@dataclasses.dataclass(frozen=True)
class Plan:
  """The curriculum of one canonical solution.

  Attributes:
    statements: char spans of the counted statements, in source order.
    stage_starts: for each stage in training order, the char offset where the given prefix ends
      and the policy starts writing (a line start); the last one is 0: s* = 0.
  """

  statements: tuple[tuple[int, int], ...]
  stage_starts: tuple[int, ...]

  @property
  def num_stages(self) -> int:
    return len(self.stage_starts)


def plan(solution: str, statements: str = "if", given: str = "") -> Plan:
  """Statements and stage boundaries of a canonical solution.

  `given` is what the prompt already holds at s* = 0 (the starter code): a start point whose
  prefix is no longer than that is the final stage's prompt again, so it is dropped.
  """
  stmts = conditional_statements(solution, statements)
  floor = len(given) if given and solution.startswith(given) else 0
  starts = []
  for k in start_points(len(stmts)):
    at = solution.rfind("\n", 0, stmts[k][0]) + 1  # snap to the line start
    if at > floor:  # an empty prefix (or the starter code alone) is the final stage itself
      starts.append(at)
  return Plan(tuple(stmts), tuple(starts) + (0,))


def prefix_at(solution: str, p: Plan, stage: int) -> str:
  """The prompt prefix of `stage` (training order): the solution up to that stage's start."""
  return solution[: p.stage_starts[stage]]


# ----------------------------------------------------------------------------- the curriculum


@dataclasses.dataclass
class StageState:
  """Curriculum state of one problem: its stage in training order and the verdicts on it
  (`retreats`: how often the adaptive schedule moved it back; absent in older checkpoints)."""

  stage: int
  num_stages: int
  attempts: int = 0
  passes: int = 0
  retreats: int = 0

  @property
  def final(self) -> bool:
    """At s* = 0 (the question alone)."""
    return self.stage == self.num_stages - 1


class Curriculum:
  """Per-problem CCCS stages, updated from pass/fail verdicts (see the module docstring).

  A problem is registered the first time it is seen (`prefix`, `stage` or `register`) and starts at
  stage 0, its first subtask. Disabled, every problem has the one stage s* = 0.
  """

  def __init__(self, cfg: CCCSConfig):
    self.cfg = cfg
    self.states: dict[str, StageState] = {}
    self.ignored = 0  # verdicts of rows built at a stage the problem has left (not checkpointed)
    self._plans: dict[str, Plan] = {}  # derived from the solution; not serialized

  def _plan(self, problem: Problem) -> Plan:
    p = self._plans.get(problem.id)
    if p is None:
      p = self._plans[problem.id] = plan(
        problem.canonical_solution, self.cfg.statements, problem.starter_code
      )
    return p

  def statements(self, problem: Problem) -> tuple[tuple[int, int], ...]:
    """Char spans of the problem's counted statements (cccs.statements), in source order."""
    return self._plan(problem).statements

  def register(self, problem: Problem) -> StageState:
    n = self._plan(problem).num_stages if self.cfg.enabled else 1
    st = self.states.get(problem.id)
    if st is None:
      st = self.states[problem.id] = StageState(stage=0, num_stages=n)
    elif st.num_stages != n:
      raise UserError(
        f"cccs state: problem {problem.id!r} has {st.num_stages} stage(s) in the "
        f"checkpoint but {n} under this config (cccs.enabled or cccs.statements "
        "changed since it was written)"
      )
    return st

  def stage(self, problem: Problem) -> int:
    """Current stage of `problem` in training order (registering it on first sight)."""
    return self.register(problem).stage

  def prefix_at(self, problem: Problem, stage: int) -> str:
    """The canonical-solution prefix given in the prompt at `stage` ('' at s* = 0)."""
    if not self.cfg.enabled:
      return ""
    return prefix_at(problem.canonical_solution, self._plan(problem), stage)

  def written_share(self, problem: Problem) -> float:
    """Share of the canonical solution's characters the policy writes at its current stage
    (curriculum progress: 1.0 at s* = 0)."""
    given = len(self.prefix(problem))
    return 1.0 - given / max(1, len(problem.canonical_solution))

  def prefix(self, problem: Problem) -> str:
    """The prefix of the problem's current stage."""
    return self.prefix_at(problem, self.stage(problem))

  def _advance(self, st: StageState) -> bool:
    if st.final:
      return False
    st.stage += 1
    st.attempts = st.passes = 0
    return True

  def record(self, problem_id: str, stage: int, passed: bool) -> bool:
    """Count one verdict of a prompt built at `stage`; return True when the problem advanced.

    A verdict for a stage the problem has already left is ignored (and counted in `ignored`).
    """
    st = self.states.get(problem_id)
    if st is None:
      raise KeyError(f"cccs: problem {problem_id!r} was never given a prompt (call prefix first)")
    if stage != st.stage:
      self.ignored += 1
      return False
    st.attempts += 1
    st.passes += int(bool(passed))
    if st.attempts >= self.cfg.min_attempts and st.passes / st.attempts > self.cfg.rho:
      return self._advance(st)
    return False

  def record_group(self, problem_id: str, stage: int, verdicts: Sequence[bool]) -> int:
    """Record the verdicts of one group (every sample of one prompt in one rollout, in order).

    Returns +1 when the problem advanced, -1 when the adaptive schedule moved it back (every
    verdict failed at its current stage, which is not stage 0), else 0.
    """
    moved = 0
    for ok in verdicts:
      moved = max(moved, int(self.record(problem_id, stage, ok)))
    st = self.states[problem_id]
    if (
      self.cfg.schedule == "adaptive"
      and verdicts
      and not any(verdicts)
      and st.stage == stage
      and stage > 0
    ):
      st.stage -= 1
      st.attempts = st.passes = 0
      st.retreats += 1
      return -1
    return moved

  def skip_stage(self, problem: Problem) -> bool:
    """Advance without a verdict (a stage that cannot be trained); False at s* = 0."""
    return self._advance(self.register(problem))

  def histogram(self) -> dict[str, int]:
    """Problems per stage in training order ('stage_K'), those at s* = 0 ('final') and, with
    the adaptive schedule, the moves back so far ('retreats')."""
    h: dict[str, int] = {}
    for st in self.states.values():
      key = f"stage_{st.stage}"
      h[key] = h.get(key, 0) + 1
    h["final"] = sum(st.final for st in self.states.values())
    if self.cfg.schedule == "adaptive":
      h["retreats"] = sum(st.retreats for st in self.states.values())
    return dict(sorted(h.items()))

  def to_json(self) -> str:
    return json.dumps(
      {
        "version": STATE_VERSION,
        "enabled": self.cfg.enabled,
        "statements": self.cfg.statements,
        "schedule": self.cfg.schedule,
        "problems": {k: dataclasses.asdict(v) for k, v in sorted(self.states.items())},
      },
      sort_keys=True,
    )

  @classmethod
  def from_json(cls, text: str, cfg: CCCSConfig) -> "Curriculum":
    d = json.loads(text)
    cur = cls(cfg)
    if d.get("version") != STATE_VERSION:
      raise UserError(
        f"cccs state: version {d.get('version')!r}, expected {STATE_VERSION} (a "
        "checkpoint from before stages were counted in training order)"
      )
    if d.get("statements") != cur.cfg.statements:
      raise UserError(
        f"cccs state: written with cccs.statements={d.get('statements')!r}, this "
        f"run has {cur.cfg.statements!r}"
      )
    cur.states = {k: StageState(**v) for k, v in d["problems"].items()}
    return cur

  def register_all(self, problems: Iterable[Problem]) -> None:
    for p in problems:
      self.register(p)
