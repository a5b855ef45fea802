"""The StepCoder training loop: choose problems -> rollout (rl/rollout.py) -> ppo_step ->
curriculum updates -> metrics, with checkpoints and periodic evaluation around it.

Determinism and resume: every random choice of iteration i is drawn from (seed, i) alone, and a
checkpoint holds everything else that changes (TrainState, curriculum state, the iteration).
A run killed at any point resumes from its last checkpoint and, with deterministic XLA on CPU,
ends in the same state as an uninterrupted run. SIGTERM or SIGINT ends the run after the current
iteration, with a checkpoint of it (stepcoder_jax/preemption.py).

Scale-out: the state lives on the mesh of `MeshConfig` (rl/spmd.py places it); the rollout and
ppo_step are jitted with explicit shardings over global arrays. With several processes
(jax.distributed) all draw the same problems and every one runs the same loop; the rollout
splits the rows between them and all-gathers the verdicts, so the curriculum and the metrics are
the same everywhere.

Gin stays at the entry points (pipeline.py, commands/): the Trainer receives config objects.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Any, Callable

import gin
import jax
import numpy as np
from flax import nnx

from stepcoder_jax import checkpoint as ckpt_lib
from stepcoder_jax import metrics as metrics_lib
from stepcoder_jax import preemption, sharding
from stepcoder_jax.config import CheckpointConfig, MeshConfig
from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError
from stepcoder_jax.rl import fgo, ppo, refill, spmd
from stepcoder_jax.rl.cccs import Curriculum
from stepcoder_jax.rl.config import CCCSConfig, FGOConfig, PPOConfig, TrainConfig
from stepcoder_jax.rl.rollout import Rollout
from stepcoder_jax.runs import train_settings
from stepcoder_jax.runs.config import EvalConfig

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class Models:
  """The policy (trained; its starting weights are the frozen reference) and the tokenizer."""

  cfg: Any
  policy: nnx.Module
  tokenizer: Any


def choose_problems(problems: list[Problem], n: int, seed: int, iteration: int) -> list[Problem]:
  """Problems of one iteration: uniform, without replacement, drawn from (seed, iteration) only,
  so a resumed run draws the same ones and every ablation arm (CCCS or FGO on or off) draws the
  same problems in the same order (CCCS changes prompts, not the draw: see rl/cccs.py)."""
  rng = np.random.default_rng([seed, iteration])
  idx = rng.choice(len(problems), size=min(n, len(problems)), replace=False)
  return [problems[i] for i in idx]


def make_sharded_ppo_step(
  policy_gd,
  value_gd,
  ppo_cfg: PPOConfig,
  placement: spmd.Placement,
  response_start: int | None = None,
):
  """ppo_step jitted with the state's and the batch's shardings (metrics replicated)."""
  return ppo.make_ppo_step(
    policy_gd,
    value_gd,
    ppo_cfg,
    in_shardings=(placement.state, placement.batch_shardings(ppo_cfg)),
    out_shardings=(placement.state, placement.replicated),
    response_start=response_start,
  )


def _check_config(cfg: TrainConfig, ppo_cfg: PPOConfig) -> None:
  """Fail before compiling on a configuration that cannot run."""
  cfg.check_sampling()
  rows = cfg.problems_per_iteration * cfg.samples_per_problem
  per = ppo_cfg.minibatches * ppo_cfg.grad_accum
  if rows % per:
    raise UserError(
      f"train: problems_per_iteration x samples_per_problem = {rows} rows is not "
      f"divisible by ppo.minibatches x ppo.grad_accum = {per}"
    )
  _check_ppo_options(cfg, ppo_cfg)
  if cfg.prompt_bucket < 0:
    raise UserError(
      f"train: gin train.prompt_bucket must be >= 0 (0: fixed), got {cfg.prompt_bucket}"
    )
  if ppo_cfg.critic_free and cfg.samples_per_problem < 2:
    raise UserError(
      f"train.samples_per_problem: {cfg.samples_per_problem} leaves ppo.advantage="
      f"{ppo_cfg.advantage!r} no group to compare a sample with; set it >= 2"
    )
  if cfg.max_new_tokens < 1 or cfg.max_prompt_tokens < 8:
    raise UserError("train: max_new_tokens must be >= 1 and max_prompt_tokens >= 8")


def _check_ppo_options(cfg: TrainConfig, ppo_cfg: PPOConfig) -> None:
  """The PPO options that only some estimators have (rl/config.py)."""
  if ppo_cfg.filter_groups and not ppo_cfg.critic_free:
    raise UserError(
      "gin ppo.filter_groups: True needs a group estimator (ppo.advantage 'grpo' "
      "or 'rloo'); 'gae' has no groups to filter"
    )
  if ppo_cfg.filter_groups and cfg.samples_per_problem < 2:
    raise UserError(
      f"gin ppo.filter_groups: True needs train.samples_per_problem >= 2 (it is "
      f"{cfg.samples_per_problem}: a group of one never carries signal)"
    )
  if ppo_cfg.max_refill_rounds and not ppo_cfg.filter_groups:
    raise UserError("gin ppo.max_refill_rounds: refills need ppo.filter_groups = True")
  if ppo_cfg.critic_warmup and ppo_cfg.critic_free:
    raise UserError(f"gin ppo.critic_warmup: {ppo_cfg.advantage!r} has no critic to warm up")


def _check_rows(cfg: TrainConfig, placement: spmd.Placement) -> None:
  rows = cfg.problems_per_iteration * cfg.samples_per_problem
  div = placement.row_divisor
  if rows % div:
    raise UserError(
      f"train: problems_per_iteration x samples_per_problem = {rows} rollout rows "
      f"are not divisible by {div} (devices along the batch mesh axes "
      f"{sharding.batch_axes(placement.mesh, placement.rules)} of mesh "
      f"{sharding.describe(placement.mesh)}, and {jax.process_count()} processes)"
    )


class Trainer:
  """Owns the loop state; `run()` trains to `cfg.num_iterations`, resuming when possible.

  The policy, value and reference parameters and the optimizer states are placed on the mesh
  of `mesh_cfg` (over all global devices) by the logical-axis rules. With several processes,
  every process constructs the Trainer identically and calls `run()`; `pool` judges this
  process's rows, and a custom `sampler` (see rollout.Rollout) gets this process's rows too.
  `curriculum`: a caller's own (a subclass, e.g. a fixed stage in tests).
  `allow_changed_settings`: resume a checkpoint saved with other settings (runs/train_settings.py)
  instead of refusing it. `devices`: the mesh's devices (default: every global device). The
  programs it runs are built by the same functions that `stepcoder_jax.compile` lowers for a
  topology without devices.
  """

  def __init__(
    self,
    models: Models,
    problems: list[Problem],
    *,
    cfg: TrainConfig,
    ppo_cfg: PPOConfig,
    cccs_cfg: CCCSConfig,
    fgo_cfg: FGOConfig,
    mesh_cfg: MeshConfig,
    ckpt_cfg: CheckpointConfig,
    pool,
    eval_cfg: EvalConfig | None = None,
    eval_problems: list[Problem] | None = None,
    sampler=None,
    curriculum: Curriculum | None = None,
    allow_changed_settings: bool = False,
    devices: list[jax.Device] | None = None,
  ):
    from stepcoder_jax.models.value import ValueModel
    from stepcoder_jax.sampling import special_ids

    self.cfg, self.ppo_cfg, self.cccs_cfg = cfg, ppo_cfg, cccs_cfg
    self.ckpt_cfg, self.eval_cfg = ckpt_cfg, eval_cfg
    _check_config(cfg, ppo_cfg)
    if hasattr(pool, "cfg"):
      fgo.check_config(fgo_cfg.enabled, pool.cfg.coverage)
    if not problems:
      raise UserError("train: the training split has no problems")
    if eval_problems and cfg.eval_every and eval_cfg is None:
      raise ValueError("Trainer: eval_problems need an eval_cfg")
    self.models, self.problems, self.pool = models, problems, pool
    self.eval_problems = eval_problems or []
    self.settings = train_settings.fingerprint(
      train=cfg,
      ppo=ppo_cfg,
      cccs=cccs_cfg,
      fgo=fgo_cfg,
      model=models.cfg,
      problems=problems,
      reward=getattr(pool, "reward_cfg", None),
    )
    self.allow_changed_settings = allow_changed_settings
    self.changed_settings: list[str] = []  # set by a resume with allow_changed_settings
    self.work_dir = Path(cfg.work_dir)
    self.work_dir.mkdir(parents=True, exist_ok=True)
    curriculum = curriculum if curriculum is not None else Curriculum(cccs_cfg)
    curriculum.register_all(problems)
    # A critic-free estimator has no value model at all (not built, placed or checkpointed).
    value = None if ppo_cfg.critic_free else ValueModel.from_policy(models.policy)
    self.policy_gd, value_gd, state = ppo.init_train_state(models.policy, value, ppo_cfg)
    self.mesh = sharding.make_mesh(mesh_cfg, devices)
    self.placement = spmd.make_placement(state, self.mesh, sharding.make_rules(mesh_cfg.rules))
    _check_rows(cfg, self.placement)
    # Every process holds the same initial weights; each device keeps only its shard.
    self.state = spmd.to_global(state, self.placement.state)
    # The reference policy is the starting policy, frozen; its own buffers (ppo_step donates).
    ref_params = spmd.to_global(state.policy, self.placement.ref)
    del state
    _log.info("mesh %s on %d process(es)", sharding.describe(self.mesh), jax.process_count())
    self.iteration = 0
    eos_ids, pad_id = special_ids(models.cfg, models.tokenizer)
    self.rollout = Rollout(
      self.policy_gd,
      value_gd,
      self.placement,
      ref_params,
      models.tokenizer,
      eos_ids,
      pad_id,
      curriculum,
      pool,
      cfg,
      ppo_cfg,
      fgo_cfg,
      sampler=sampler,
    )
    self.prompt_len = self.rollout.prompt_len  # the most prompt columns a batch has
    self._ppo_steps: dict[int, Callable] = {}
    self._make_step = functools.partial(
      make_sharded_ppo_step, self.policy_gd, value_gd, ppo_cfg, self.placement
    )
    self.ppo_step = self._make_step(response_start=self.prompt_len)  # at the limit's width

  def ppo_step_for(self, prompt_len: int) -> Callable:
    """The PPO step of batches with `prompt_len` prompt columns (compiled once each)."""
    if prompt_len == self.prompt_len:
      return self.ppo_step
    if prompt_len not in self._ppo_steps:
      self._ppo_steps[prompt_len] = self._make_step(response_start=prompt_len)
    return self._ppo_steps[prompt_len]

  @property
  def curriculum(self) -> Curriculum:
    """The CCCS state (the rollout builds prompts from it; restored from checkpoints)."""
    return self.rollout.curriculum

  def policy_model(self) -> nnx.Module:
    """The current policy as a Decoder (shares the state's arrays)."""
    return nnx.merge(self.policy_gd, self.state.policy, self.state.policy_rest)

  # ---------------------------------------------------------------- checkpoints

  def _trees(self) -> dict[str, Any]:
    # "policy" is the whole Decoder state (frozen parts too), so generate/export can load it.
    st = self.state
    trees = {"policy": nnx.merge_state(st.policy, st.policy_rest), "policy_opt": st.policy_opt}
    if st.value is not None:
      trees.update(value=st.value, value_opt=st.value_opt)
    return trees

  def save(self, ckpt: ckpt_lib.Checkpointer) -> None:
    meta = {
      "iteration": self.iteration,
      "curriculum": self.curriculum.to_json(),
      "seed": self.cfg.seed,
      "ppo_step": int(self.state.step),
      "kl_coef": float(self.state.kl_coef),
      "gin": gin.operative_config_str(),
      "settings": self.settings,
    }
    ckpt.save(self.iteration, self._trees(), meta=meta, force=True)

  def maybe_restore(self, ckpt: ckpt_lib.Checkpointer) -> bool:
    if ckpt.latest_step() is None:
      return False
    saved = ckpt.read_meta().get("settings")
    self.changed_settings = train_settings.check(
      saved, self.settings, ckpt.directory, self.allow_changed_settings
    )
    trees, meta = ckpt.restore(None, targets=self._trees())  # onto this run's shardings
    trees["policy"], trees["policy_rest"] = nnx.split_state(
      trees["policy"], ppo.trainable(self.ppo_cfg), ...
    )
    rep = self.placement.replicated
    # A kl_coef changed on purpose restarts the (adaptive) coefficient at the new value.
    kl_coef = self.ppo_cfg.kl_coef if "ppo.kl_coef" in self.changed_settings else meta["kl_coef"]
    step, kl = spmd.to_global(
      (np.asarray(meta["ppo_step"], np.int32), np.asarray(kl_coef, np.float32)), (rep, rep)
    )
    self.state = self.state.replace(**trees, step=step, kl_coef=kl)
    curriculum = type(self.curriculum).from_json(meta["curriculum"], self.cccs_cfg)
    curriculum.register_all(self.problems)
    self.rollout.curriculum = curriculum
    self.iteration = int(meta["iteration"])
    _log.info("resumed from %s at iteration %d", ckpt.directory, self.iteration)
    if self.changed_settings:
      _log.warning(
        "continuing with changed settings (%s): %s",
        train_settings.FLAG,
        train_settings.describe(saved, self.settings, self.changed_settings),
      )
    return True

  # ---------------------------------------------------------------- one iteration

  def iterate(self) -> dict[str, float]:
    """One StepCoder iteration; returns its metrics (the same on every process)."""
    t0, it = time.time(), self.iteration
    problems = choose_problems(self.problems, self.cfg.problems_per_iteration, self.cfg.seed, it)
    rng = jax.random.fold_in(jax.random.PRNGKey(self.cfg.seed), it)
    # Batches to be merged by dynamic sampling share the fixed prompt columns.
    fixed = bool(self.ppo_cfg.max_refill_rounds)
    batch, rows = self.rollout.collect(self.state, problems, rng, fixed_columns=fixed)
    refilled = {}
    if self.ppo_cfg.max_refill_rounds:  # dynamic sampling: groups with signal for dropped ones
      batch, rows, refilled = refill.refill(
        self.rollout,
        self.state,
        batch,
        rows,
        self.problems,
        problems,
        rounds=self.ppo_cfg.max_refill_rounds,
        seed=self.cfg.seed,
        iteration=it,
      )
    self.state, step_metrics = self.ppo_step_for(rows.prompt_len)(self.state, batch)
    # Rows at s* = 0 (the whole problem; all rows without CCCS), read before the verdicts move
    # the curriculum: their pass rate is comparable across arms, the stage-mixed one is not.
    final = np.array(
      [
        not it.padding and it.stage == self.curriculum.register(it.problem).num_stages - 1
        for it in rows.items
      ],
      bool,
    )
    ignored = rows.record(self.curriculum)  # every row, in global row order, on every process
    self.iteration += 1
    out = {
      **rows.metrics(),
      **refilled,
      "rows_final": int(final.sum()),
      **{f"ppo/{k}": float(v) for k, v in jax.device_get(step_metrics).items()},
      "cccs/ignored_verdicts": ignored,
      **{f"cccs/{k}": count for k, count in self.curriculum.histogram().items()},
    }
    if final.any():  # absent, not NaN, when every row was at an earlier stage
      out["pass_rate_final"] = float(rows.passed[final].mean())
    out["cccs/written_share"] = float(
      np.mean([self.curriculum.written_share(p) for p in self.problems])
    )
    out["time/iteration_s"] = time.time() - t0
    return out

  def evaluate(self, name: str):
    """pass@k of the current policy on the eval problems (tables under <work_dir>/eval).

    With several processes the policy is gathered to every host and process 0 alone evaluates
    (returns None elsewhere): evaluation is host-local sampling, not part of the SPMD program.
    """
    from stepcoder_jax.runs import evaluation as eval_run

    model = self.policy_model()
    if jax.process_count() > 1:
      params, rest = spmd.host_copy((self.state.policy, self.state.policy_rest))
      if jax.process_index() != 0:
        return None
      dev = jax.local_devices()[0]
      model = nnx.merge(self.policy_gd, jax.device_put(params, dev), jax.device_put(rest, dev))
    return eval_run.evaluate(
      model,
      self.models.tokenizer,
      self.eval_problems,
      self.eval_cfg,
      self.pool,
      out_dir=self.work_dir / "eval",
      name=name,
    )

  # ---------------------------------------------------------------- the loop

  def run(self, on_iteration=None) -> list[dict]:
    cfg = self.cfg
    history = []
    every = max(1, self.ckpt_cfg.save_interval_steps)
    ck_dir = ckpt_lib.checkpoint_dir(self.work_dir)
    ckpt_lib.save_inference_assets(ck_dir, self.models.cfg, self.models.tokenizer)
    stopping = False
    with ckpt_lib.Checkpointer(ck_dir, self.ckpt_cfg) as ckpt, preemption.StopOnSignal() as stop:
      resumed = self.maybe_restore(ckpt)
      preemption.clear_marker(self.work_dir)
      if jax.process_index() == 0:  # each segment of a resumed run keeps its own settings
        train_settings.record_operative(
          self.work_dir,
          gin.operative_config_str(),
          self.iteration if resumed else None,
          self.changed_settings,
        )
      with (
        metrics_lib.MetricsWriter(
          self.work_dir, resumed_at=self.iteration if resumed else None
        ) as writer,
        metrics_lib.ProgressBar(
          cfg.num_iterations, initial=self.iteration, desc="stepcoder"
        ) as bar,
      ):
        while self.iteration < cfg.num_iterations:
          m = self.iterate()
          # Agreed by every process, after the iteration's work and before its metrics row (a
          # signal seen after the row counts for the next iteration). The last iteration
          # finishes normally; a stop skips the evaluation due now.
          stopping = stop.should_stop() and self.iteration < cfg.num_iterations
          if (
            not stopping
            and cfg.eval_every
            and self.eval_problems
            and (self.iteration % cfg.eval_every == 0 or self.iteration == cfg.num_iterations)
          ):
            rep = self.evaluate(f"step{self.iteration}")
            if rep is not None:
              m.update({f"eval/{k}": v for k, v in rep.metrics().items()})
          writer.write(self.iteration, m)
          bar.update({"reward": m["reward_mean"], "pass": m["pass_rate"]})
          history.append(m)
          if stopping or self.iteration % every == 0 or self.iteration == cfg.num_iterations:
            with stop.saving():
              self.save(ckpt)
              if stopping:
                ckpt.wait()
          if on_iteration is not None:
            on_iteration(self, m)
          if stopping:
            break
      ckpt.wait()
    if stopping:
      raise stop.stopped(self.work_dir, f"iteration {self.iteration}", ck_dir / str(self.iteration))
    return history
