"""Host-side execution: sandboxed worker pool, judges (stdio, call, assert), coverage, reward.

Imports no JAX: it runs on the host CPUs beside the accelerator work. Names are loaded lazily so
that a worker process (which imports this package) stays small: every fork of it is cheaper, and
modules like ``subprocess`` never exist inside a sandboxed child.
"""

import importlib

_EXPORTS = {
  "ExecutionConfig": "stepcoder_jax.execution.config",
  "RewardConfig": "stepcoder_jax.execution.config",
  "ExecResult": "stepcoder_jax.execution.job",
  "Job": "stepcoder_jax.execution.job",
  "ExecutionPool": "stepcoder_jax.execution.pool",
  "OUTCOMES": "stepcoder_jax.execution.reward",
  "reward": "stepcoder_jax.execution.reward",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
