"""Glue from gin configs to the pieces: load the policy and the problems, open the execution pool,
run the trainer. Commands (`train`, `demo`) call these; tests call them with explicit configs.

Multi-host: `train` first joins jax.distributed (`sharding.distributed_init`, from gin's
`distributed` config or the JAX_* environment that launch/ sets), then every process loads the
same model and problems and opens its own execution pool for its own rollout rows; only process 0
writes files other than checkpoints (orbax writes its shards from every process).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from stepcoder_jax.config import CheckpointConfig, MeshConfig
from stepcoder_jax.data.config import DatasetConfig
from stepcoder_jax.data.record import Problem
from stepcoder_jax.execution.config import ExecutionConfig
from stepcoder_jax.models.config import ModelSpec, remat_policy
from stepcoder_jax.rl import fgo
from stepcoder_jax.rl.config import CCCSConfig, FGOConfig, PPOConfig, TrainConfig
from stepcoder_jax.runs import final_policy
from stepcoder_jax.runs.config import EvalConfig

_log = logging.getLogger(__name__)


def load_policy(path: str | None = None, spec: ModelSpec | None = None):
  """(Models) for `path`, or gin's model.path; dtypes, remat, scan_layers and the output
  vocabulary from gin's `model`."""
  from stepcoder_jax.models import loading
  from stepcoder_jax.runs.trainer import Models

  spec = spec or ModelSpec()
  cfg, decoder, tok = loading.load_model(
    path or spec.path, dtype=spec.dtype, param_dtype=spec.param_dtype
  )
  if tok is None:
    from stepcoder_jax.errors import UserError

    raise UserError(f"{path or spec.path}: no tokenizer files next to the model")
  flags = {"scan_layers": True} if spec.scan_layers and not cfg.scan_layers else {}
  if spec.remat_override is not None and spec.remat_override != remat_policy(cfg.remat):
    flags["remat"] = spec.remat  # as given: True stays True (a checkpoint's config digest)
  if flags or spec.output_vocab is not None:
    from stepcoder_jax.models import output_vocab
    from stepcoder_jax.sampling import special_ids

    cfg = dataclasses.replace(cfg, **flags)
    cfg = output_vocab.apply(cfg, spec.output_vocab, required=special_ids(cfg, tok)[0])
    decoder.cfg = cfg
  return Models(cfg=cfg, policy=decoder, tokenizer=tok)


def load_split(
  split: str,
  dataset: str | None = None,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  dc: DatasetConfig | None = None,
) -> list[Problem]:
  from stepcoder_jax.data import load

  dc = dc or DatasetConfig()
  return load.load_problems(
    dataset or dc.name,
    split,
    data_dir=data_dir or dc.data_dir,
    manual_dir=manual_dir or dc.manual_dir,
  )


def open_pool(cfg: ExecutionConfig | None = None):
  """A started ExecutionPool from gin's `execution` config (use as a context manager)."""
  from stepcoder_jax.execution import ExecutionPool

  pool = ExecutionPool(cfg or ExecutionConfig())
  pool.start()
  return pool


def make_trainer(
  cfg: TrainConfig,
  models,
  problems: list[Problem],
  pool,
  eval_problems: list[Problem] | None = None,
  allow_changed_settings: bool = False,
):
  """A Trainer from gin's ppo/cccs/fgo/mesh/checkpoint/eval configs (gin is read here, at the
  entry point, and nowhere below). Its run records the operative config (one segment per
  resume: runs/train_settings.py)."""
  from stepcoder_jax.runs.trainer import Trainer

  return Trainer(
    models,
    problems,
    cfg=cfg,
    ppo_cfg=PPOConfig(),
    cccs_cfg=CCCSConfig(),
    fgo_cfg=FGOConfig(),
    mesh_cfg=MeshConfig(),
    ckpt_cfg=CheckpointConfig(),
    pool=pool,
    eval_cfg=EvalConfig(),
    eval_problems=eval_problems,
    allow_changed_settings=allow_changed_settings,
  )


def run_trainer(trainer) -> list[dict]:
  """Train to the configured iteration count, then plot the curves of the run."""
  import jax

  from stepcoder_jax import metrics as metrics_lib

  history = trainer.run()
  work = Path(trainer.cfg.work_dir)
  jsonl = work / "metrics.jsonl"
  if jax.process_index() == 0 and jsonl.exists():
    metrics_lib.plot_curves(
      jsonl,
      work / "training_curves.png",
      metrics_lib.TRAIN_CURVES,
      smooth=5,
      title=f"training curves of {work.name}",
      x_label="iteration",
    )
  return history


def train(
  cfg: TrainConfig | None = None,
  *,
  model: str | None = None,
  models=None,
  problems: list[Problem] | None = None,
  dataset: str | None = None,
  data_dir: str | None = None,
  manual_dir: str | None = None,
  pool=None,
  data_source: str | None = None,
  allow_changed_settings: bool = False,
) -> list[dict]:
  """Run (or resume) StepCoder training; returns the per-iteration metrics (the same on every
  process; those of the end-of-run evaluation only on process 0). The final policy goes to
  <work_dir>/model with its provenance (`data_source` describes the problems given). A resume
  with other settings than the checkpoint's stops with a UserError unless
  `allow_changed_settings`."""
  from stepcoder_jax import sharding
  from stepcoder_jax.config import DistributedConfig

  sharding.distributed_init(DistributedConfig())  # before anything touches the devices
  cfg = cfg or TrainConfig()
  # Configuration errors before loading anything (the Trainer checks again for direct callers).
  cfg.check_sampling()
  exec_cfg = pool.cfg if pool is not None else ExecutionConfig()
  fgo.check_config(FGOConfig().enabled, exec_cfg.coverage)
  dc = DatasetConfig()
  problems = (
    problems
    if problems is not None
    else load_split(dc.train_split, dataset, data_dir, manual_dir, dc)
  )
  eval_problems = (
    load_split(EvalConfig().split or dc.eval_split, dataset, data_dir, manual_dir, dc)
    if cfg.eval_every
    else None
  )
  models = models or load_policy(model)
  own_pool = pool is None
  pool = pool or open_pool()
  try:
    trainer = make_trainer(cfg, models, problems, pool, eval_problems, allow_changed_settings)
    history = run_trainer(trainer)
    data = data_source or (
      f"{dataset or dc.name} split {dc.train_split} ({len(problems)} problems)"
    )
    final_policy.save(trainer, models.tokenizer, parent=model or ModelSpec().path, data=data)
    return history
  finally:
    if own_pool:
      pool.close()
