"""Host-side execution: sandboxed worker pool, judges (stdio, call, assert), coverage, reward.

Imports no JAX: it runs on the host CPUs beside the accelerator work.
"""
from stepcoder_jax.execution.config import ExecutionConfig, RewardConfig
from stepcoder_jax.execution.job import ExecResult, Job
from stepcoder_jax.execution.pool import ExecutionPool
from stepcoder_jax.execution.reward import OUTCOMES, reward

__all__ = ["ExecutionConfig", "RewardConfig", "ExecResult", "Job", "ExecutionPool", "OUTCOMES",
           "reward"]
