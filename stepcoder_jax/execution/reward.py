"""The reward of one judged program: CodeRL's by outcome, or a plug-in (gin ``reward.fn``).

The pool computes it (`ExecResult.reward`) and the rollout reads it from there, so training,
`judge` and evaluation samples report the same value.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from stepcoder_jax.errors import UserError
from stepcoder_jax.execution.config import RewardConfig

OUTCOMES = ("passed", "failed", "runtime_error", "timeout", "compile_error")


def reward(outcome: str, cfg: RewardConfig | None = None) -> float:
  """+1 passed, -0.3 wrong answer, -0.6 runtime error or timeout, -1 compile error (defaults)."""
  if outcome not in OUTCOMES:
    raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
  return float(getattr(cfg or RewardConfig(), outcome))


def plugin_rewards(fn: Callable[..., float], jobs: Sequence, results: Sequence) -> None:
  """Set each result's reward to ``fn(problem, completion, result)`` (the CodeRL value is there
  when `fn` is called); a value that is not a finite number is a one-line UserError."""
  name = getattr(fn, "__qualname__", repr(fn))
  for job, res in zip(jobs, results):
    raw = fn(job.problem, job.completion, res)
    try:
      value = float(raw)
    except (TypeError, ValueError):
      value = math.nan
    if isinstance(raw, bool) or not math.isfinite(value):
      raise UserError(
        f"reward.fn {name}: returned {raw!r} for problem {job.problem.id!r}; "
        "expected a finite number"
      )
    res.reward = value
