"""CodeRL / StepCoder reward of one judged program."""
from __future__ import annotations

from stepcoder_jax.execution.config import RewardConfig

OUTCOMES = ("passed", "failed", "runtime_error", "timeout", "compile_error")


def reward(outcome: str, cfg: RewardConfig | None = None) -> float:
  """+1 passed, -0.3 wrong answer, -0.6 runtime error or timeout, -1 compile error (defaults)."""
  if outcome not in OUTCOMES:
    raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
  return float(getattr(cfg or RewardConfig(), outcome))
