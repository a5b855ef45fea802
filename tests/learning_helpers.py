"""What the learning tests share: the small judge pool they train against and a Trainer on the
tiny model with FGO on, the default mesh and checkpoints (each test brings its own configs)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def learning_pool():
  """A started two-worker pool with short limits (the tasks are one-line programs)."""
  from stepcoder_jax.execution import ExecutionConfig, ExecutionPool

  pool = ExecutionPool(
    ExecutionConfig(workers=2, timeout_s=2.0, program_timeout_s=8.0, memory_mb=512)
  )
  pool.start()
  try:
    yield pool
  finally:
    pool.close()


def fgo_trainer(models, problems, pool, train_cfg, ppo_cfg, cccs_cfg, curriculum=None):
  """A Trainer with FGO on; `curriculum` overrides the plan (e.g. a fixed last-line stage)."""
  from stepcoder_jax.config import CheckpointConfig, MeshConfig
  from stepcoder_jax.rl.config import FGOConfig
  from stepcoder_jax.runs.trainer import Trainer

  return Trainer(
    models,
    problems,
    cfg=train_cfg,
    ppo_cfg=ppo_cfg,
    cccs_cfg=cccs_cfg,
    fgo_cfg=FGOConfig(enabled=True),
    mesh_cfg=MeshConfig(),
    ckpt_cfg=CheckpointConfig(),
    pool=pool,
    curriculum=curriculum,
  )
