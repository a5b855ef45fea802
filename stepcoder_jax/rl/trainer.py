"""The StepCoder training loop: CCCS prompts -> sampler -> execution pool -> rewards + FGO masks
-> reference/value/old log-prob forwards -> ppo_step -> curriculum updates -> metrics/checkpoints.

Determinism and resume: every random choice of iteration i is drawn from (seed, i) alone, and a
checkpoint holds everything else that changes (TrainState, curriculum state, the iteration).
A run killed at any point resumes from its last checkpoint and, with deterministic XLA on CPU,
ends in the same state as an uninterrupted run.

Scale-out (see rl/spmd.py): the state lives on the gin mesh (`mesh.*`); the sampler, the rollout
forwards and ppo_step are jitted with explicit shardings over global arrays, rows split over the
batch axes. With several processes (jax.distributed), all draw the same problems, each samples,
judges and packs its own block of rows, the global batch is assembled from the blocks, and the
per-row verdicts are all-gathered so that the curriculum and the metrics are the same everywhere.

Overlap: the sampled programs go to the host pool (futures) before the device forward passes
(old/ref log-probs and values) are dispatched; JAX dispatch is asynchronous, so the tests run
while the accelerator computes, and the step waits only where it needs the rewards.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import gin
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stepcoder_jax import checkpoint as ckpt_lib
from stepcoder_jax import metrics as metrics_lib
from stepcoder_jax import sharding
from stepcoder_jax.config import CheckpointConfig, MeshConfig
from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError
from stepcoder_jax.rl import batching, fgo, ppo, rollout, spmd
from stepcoder_jax.rl.cccs import Curriculum
from stepcoder_jax.rl.config import CCCSConfig, FGOConfig, PPOConfig
from stepcoder_jax.rl.train_config import TrainConfig

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class Models:
  """The policy (trained), its frozen reference (the SFT policy) and the tokenizer."""
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


def record_verdicts(curriculum: Curriculum, items, passed) -> None:
  """Each real row's verdict toward the stage its prompt was built at (padding rows: none)."""
  for item, ok in zip(items, passed):
    if not item.padding:
      curriculum.record(item.problem.id, item.stage, bool(ok))


def group_ids(items) -> np.ndarray:
  """[n] int32 group of each global row for critic-free advantages: the first row of its
  problem (the trainer repeats each problem samples_per_problem times); a padding row is a
  group of its own, so its reward never enters a real group's statistics."""
  first: dict[str, int] = {}
  out = np.arange(len(items), dtype=np.int32)
  for i, item in enumerate(items):
    if not item.padding:
      out[i] = first.setdefault(item.problem.id, i)
  return out


def make_rollout_forward(policy_gd, value_gd, chunk: int, placement: spmd.Placement,
                         response_start: int | None = None):
  """Jitted {old_logprobs, ref_logprobs[, values]} of a packed batch (no rewards needed), zero
  outside the response; global [B, T] arrays sharded by rows. `value_gd` None (critic-free): no
  value forward and no values. `response_start`: the prompt bucket, where every response begins
  (the vocabulary projection runs from there on)."""

  def forward(state: ppo.TrainState, ref_params, tokens, positions, attention_mask,
              response_mask):
    pol = nnx.merge(policy_gd, state.policy, state.policy_rest)
    ref = nnx.merge(policy_gd, ref_params, state.policy_rest)
    resp = response_mask.astype(jnp.float32)
    old = ppo.policy_logprobs(pol, tokens, positions, attention_mask, chunk=chunk,
                              with_entropy=False, response_start=response_start)
    refl = ppo.policy_logprobs(ref, tokens, positions, attention_mask, chunk=chunk,
                               with_entropy=False, response_start=response_start)
    out = {"old_logprobs": old * resp, "ref_logprobs": refl * resp}
    if value_gd is not None:
      val = nnx.merge(value_gd, state.value, state.value_rest)
      out["values"] = ppo.value_estimates(val, tokens, positions, attention_mask) * resp
    return out

  b2 = placement.batch(2)
  return jax.jit(forward, in_shardings=(placement.state, placement.ref, b2, b2, b2, b2),
                 out_shardings=b2)


def make_policy_sampler(policy_gd, temperature: float, top_p: float, top_k: int,
                        max_new_tokens: int, eos_ids, pad_id: int, prompt_len: int,
                        placement: spmd.Placement):
  """`sample(state, prompt_ids, rng) -> response ids per row` with the current policy params.

  `prompt_ids` are this process's rows (`placement.rows`); the sampler runs on the global batch
  (every process calls it), so FSDP/tensor-sharded parameters work across hosts. Prompts are
  left-padded to the fixed `prompt_len` bucket, so the sampler compiles once.
  """
  from stepcoder_jax import sampling
  from stepcoder_jax.models.config import SamplingConfig

  scfg = SamplingConfig(temperature=temperature, top_p=top_p, top_k=top_k,
                        max_new_tokens=max_new_tokens)
  eos_ids = tuple(int(e) for e in eos_ids)

  def run(params, rest, tokens, mask, rng, n, temp, p):
    gd, st = nnx.split(nnx.merge(policy_gd, params, rest))
    return sampling.sample_fn(gd, scfg, eos_ids, pad_id)(st, tokens, mask, rng, n, temp, p)

  b2, rep = placement.batch(2), placement.replicated
  jitted = jax.jit(run, in_shardings=(placement.state.policy, placement.state.policy_rest, b2,
                                      b2, rep, rep, rep, rep),
                   out_shardings=placement.batch(1))  # a prefix: every output is [B, ...]
  knobs = spmd.to_global(
      (np.asarray(max_new_tokens, np.int32),
       np.asarray(temperature if temperature > 0 else 1.0, np.float32),
       np.asarray(top_p, np.float32)), (rep, rep, rep))

  def sample(state: ppo.TrainState, prompt_ids, rng):
    tokens, mask = sampling.pad_prompts(prompt_ids, pad_id, min_bucket=prompt_len)
    n = placement.global_rows(len(prompt_ids))
    lo, hi = placement.rows(n)
    g = spmd.from_local_rows({"tokens": tokens, "mask": mask}, placement, n)
    out = jitted(state.policy, state.policy_rest, g["tokens"], g["mask"],
                 spmd.to_global(rng, rep), *knobs)
    toks = spmd.local_rows(out.tokens, lo, hi)
    lens = spmd.local_rows(out.lengths, lo, hi)
    return [[int(t) for t in toks[i, :int(lens[i])]] for i in range(len(prompt_ids))]

  sample.jitted = jitted
  return sample


def make_sharded_ppo_step(policy_gd, value_gd, ppo_cfg: PPOConfig, placement: spmd.Placement,
                          response_start: int | None = None):
  """ppo_step jitted with the state's and the batch's shardings (metrics replicated)."""
  return ppo.make_ppo_step(policy_gd, value_gd, ppo_cfg,
                           in_shardings=(placement.state,
                                         placement.batch_tree(ppo.batch_keys(ppo_cfg))),
                           out_shardings=(placement.state, placement.replicated),
                           response_start=response_start)


def _check_config(cfg: TrainConfig, ppo_cfg: PPOConfig) -> None:
  """Fail before compiling on a configuration that cannot run."""
  cfg.check_sampling()
  rows = cfg.problems_per_iteration * cfg.samples_per_problem
  per = ppo_cfg.minibatches * ppo_cfg.grad_accum
  if rows % per:
    raise UserError(f"train: problems_per_iteration x samples_per_problem = {rows} rows is not "
                    f"divisible by ppo.minibatches x ppo.grad_accum = {per}")
  if ppo_cfg.critic_free and cfg.samples_per_problem < 2:
    raise UserError(f"train.samples_per_problem: {cfg.samples_per_problem} leaves ppo.advantage="
                    f"{ppo_cfg.advantage!r} no group to compare a sample with; set it >= 2")
  if cfg.max_new_tokens < 1 or cfg.max_prompt_tokens < 8:
    raise UserError("train: max_new_tokens must be >= 1 and max_prompt_tokens >= 8")


def _check_rows(cfg: TrainConfig, placement: spmd.Placement) -> None:
  rows = cfg.problems_per_iteration * cfg.samples_per_problem
  div = placement.row_divisor
  if rows % div:
    raise UserError(f"train: problems_per_iteration x samples_per_problem = {rows} rollout rows "
                    f"are not divisible by {div} (devices along the batch mesh axes "
                    f"{sharding.batch_axes(placement.mesh, placement.rules)} of mesh "
                    f"{sharding.describe(placement.mesh)}, and {jax.process_count()} processes)")


class Trainer:
  """Owns the loop state; `run()` trains to `cfg.num_iterations`, resuming when possible.

  The mesh comes from gin (`mesh.*`, over all global devices); the policy, value and reference
  parameters and the optimizer states are placed on it by the logical-axis rules. With several
  processes, every process constructs the Trainer identically and calls `run()`; `pool` judges
  this process's rows, and a custom `sampler(state, prompt_ids, rng) -> token id lists` gets this
  process's rows too (every process must call it: it is a collective on a mesh).
  """

  def __init__(self, models: Models, problems: list[Problem], *, cfg: TrainConfig | None = None,
               ppo_cfg: PPOConfig | None = None, cccs_cfg: CCCSConfig | None = None,
               fgo_cfg: FGOConfig | None = None, pool=None, sampler=None,
               eval_problems: list[Problem] | None = None, eval_cfg=None,
               curriculum: Curriculum | None = None):
    from stepcoder_jax.models.value import ValueModel

    self.cfg = cfg or TrainConfig()
    self.ppo_cfg = ppo_cfg or PPOConfig()
    self.cccs_cfg = cccs_cfg or CCCSConfig()
    self.fgo_cfg = fgo_cfg or FGOConfig()
    _check_config(self.cfg, self.ppo_cfg)
    if pool is not None and hasattr(pool, "cfg"):
      fgo.check_config(self.fgo_cfg.enabled, pool.cfg.coverage)
    if not problems:
      raise UserError("train: the training split has no problems")
    self.models = models
    self.tok = models.tokenizer
    self.problems = problems
    self.pool = pool
    self.sampler = sampler
    self.eval_problems = eval_problems or []
    self.eval_cfg = eval_cfg
    self.work_dir = Path(self.cfg.work_dir)
    self.work_dir.mkdir(parents=True, exist_ok=True)
    # A caller may bring its own curriculum (a subclass, e.g. a fixed stage in tests).
    self.curriculum = curriculum if curriculum is not None else Curriculum(self.cccs_cfg)
    self.curriculum.register_all(problems)
    # A critic-free estimator has no value model at all (not built, placed or checkpointed).
    value = None if self.ppo_cfg.critic_free else ValueModel.from_policy(models.policy)
    self.policy_gd, self.value_gd, state = ppo.init_train_state(models.policy, value,
                                                                self.ppo_cfg)
    mesh_cfg = MeshConfig()
    self.mesh = sharding.make_mesh(mesh_cfg)
    self.placement = spmd.make_placement(state, self.mesh, sharding.make_rules(mesh_cfg.rules))
    _check_rows(self.cfg, self.placement)
    # Every process holds the same initial weights; each device keeps only its shard.
    self.state = spmd.to_global(state, self.placement.state)
    # The reference policy is the starting policy, frozen; its own buffers (ppo_step donates).
    self.ref_params = spmd.to_global(state.policy, self.placement.ref)
    del state
    _log.info("mesh %s on %d process(es)", sharding.describe(self.mesh), jax.process_count())
    self.iteration = 0
    from stepcoder_jax.sampling import eos_ids_for
    self.eos_ids = eos_ids_for(models.cfg, self.tok)  # the same EOS set as eval and generate
    self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
    self.prompt_len = batching.bucket(self.cfg.max_prompt_tokens)
    self.response_len = batching.bucket(self.cfg.max_new_tokens)
    self.ppo_step = make_sharded_ppo_step(self.policy_gd, self.value_gd, self.ppo_cfg,
                                          self.placement, response_start=self.prompt_len)
    self.forward = make_rollout_forward(self.policy_gd, self.value_gd, self.cfg.logprob_chunk,
                                        self.placement, response_start=self.prompt_len)
    if self.sampler is None:
      self.sampler = make_policy_sampler(
          self.policy_gd, self.cfg.temperature, self.cfg.top_p, self.cfg.top_k,
          self.cfg.max_new_tokens, self.eos_ids, self.pad_id, self.prompt_len, self.placement)

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
    meta = {"iteration": self.iteration, "curriculum": self.curriculum.to_json(),
            "seed": self.cfg.seed, "ppo_step": int(self.state.step),
            "kl_coef": float(self.state.kl_coef), "gin": gin.operative_config_str()}
    ckpt.save(self.iteration, self._trees(), meta=meta, force=True)

  def maybe_restore(self, ckpt: ckpt_lib.Checkpointer) -> bool:
    if ckpt.latest_step() is None:
      return False
    trees, meta = ckpt.restore(None, targets=self._trees())  # onto this run's shardings
    trees["policy"], trees["policy_rest"] = nnx.split_state(trees["policy"],
                                                            ppo.trainable(self.ppo_cfg), ...)
    rep = self.placement.replicated
    step, kl = spmd.to_global((np.asarray(meta["ppo_step"], np.int32),
                               np.asarray(meta["kl_coef"], np.float32)), (rep, rep))
    self.state = self.state.replace(**trees, step=step, kl_coef=kl)
    self.curriculum = type(self.curriculum).from_json(meta["curriculum"], self.cccs_cfg)
    self.curriculum.register_all(self.problems)
    self.iteration = int(meta["iteration"])
    _log.info("resumed from %s at iteration %d", ckpt.directory, self.iteration)
    return True

  # ---------------------------------------------------------------- one iteration

  def iterate(self) -> dict[str, float]:
    cfg, it = self.cfg, self.iteration
    t0 = time.time()
    # Every process draws the same problems and builds the same prompts (cheap host work) ...
    chosen = choose_problems(self.problems, cfg.problems_per_iteration, cfg.seed, it)
    chosen = [p for p in chosen for _ in range(cfg.samples_per_problem)]
    items, prompt_report = rollout.make_items(chosen, self.curriculum, self.tok,
                                              cfg.prompt_style, self.prompt_len)
    if not items:
      raise UserError(f"train: every prompt of iteration {it} is longer than "
                      f"train.max_prompt_tokens={cfg.max_prompt_tokens}")
    per = math.lcm(max(1, self.ppo_cfg.minibatches * self.ppo_cfg.grad_accum),
                   self.placement.row_divisor)
    items = rollout.pad_items(items, per)  # keep the batch divisible (rare: skipped prompts)
    # ... then samples, judges and packs only its own rows.
    n = len(items)
    lo, hi = self.placement.rows(n)
    mine = items[lo:hi]
    rng = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), it)
    responses = self.sampler(self.state, [i.prompt_ids for i in mine], rng)
    t_sample = time.time()
    rollout.fill_responses(mine, responses, self.tok, self.eos_ids)
    future = self.pool.submit(rollout.jobs(mine))
    arrays = rollout.pack(mine, self.pad_id, self.prompt_len, self.response_len)
    arrays["response_mask"][[i for i, item in enumerate(mine) if item.padding]] = 0  # no weight
    dev = spmd.from_local_rows(arrays, self.placement, n)
    scored = self.forward(self.state, self.ref_params, dev["tokens"], dev["positions"],
                          dev["attention_mask"], dev["response_mask"])
    # (dispatched asynchronously: the device computes while the pool judges)
    results = future.result()
    t_judge = time.time()
    for item, res in zip(mine, results):
      item.result = res
    rm = rollout.rewards_and_masks(mine, arrays, self.prompt_len, self.fgo_cfg.enabled)
    judged = spmd.from_local_rows({"fgo_mask": rm["fgo_mask"].astype(np.int32),
                                   "rewards": rm["rewards"].astype(np.float32),
                                   "group": group_ids(items)[lo:hi]},
                                  self.placement, n)
    batch = {**dev, **judged, **scored}
    self.state, step_metrics = self.ppo_step(self.state, batch)
    step_metrics = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
    # The curriculum sees every row's verdict, in global row order, on every process.
    rows = spmd.exchange_results(mine, rm["fgo_mask"], arrays["response_mask"], lo, hi, n)
    truncated = spmd.gather_rows(np.asarray([[rollout.truncated_rate([it])] for it in mine],
                                            np.float32), lo, hi, n)[:, 0]
    ignored = self.curriculum.ignored
    record_verdicts(self.curriculum, items, rows.passed)
    real = np.array([not item.padding for item in items])
    self.iteration += 1
    out = {**spmd.summary(dataclasses.replace(
               rows, **{f.name: getattr(rows, f.name)[real] for f in dataclasses.fields(rows)})),
           **{f"ppo/{k}": v for k, v in step_metrics.items()},
           "prompts_skipped": len(prompt_report.skipped),
           "truncated_rate": float(truncated[real].mean()) if real.any() else 0.0,
           "prompts_shortened": prompt_report.shortened,
           "cccs/stages_passed_over": prompt_report.stages_passed_over,
           "cccs/ignored_verdicts": self.curriculum.ignored - ignored,
           "time/sample_s": t_sample - t0, "time/judge_wait_s": t_judge - t_sample,
           "time/iteration_s": time.time() - t0}
    for key, count in self.curriculum.histogram().items():
      out[f"cccs/{key}"] = count
    return out

  def evaluate(self, name: str):
    """pass@k of the current policy on the eval problems (tables under <work_dir>/eval).

    With several processes the policy is gathered to every host and process 0 alone evaluates
    (returns None elsewhere): evaluation is host-local sampling, not part of the SPMD program.
    """
    from stepcoder_jax.rl import evaluate as eval_run
    from stepcoder_jax.rl.train_config import EvalConfig

    model = self.policy_model()
    if jax.process_count() > 1:
      params, rest = spmd.host_copy((self.state.policy, self.state.policy_rest))
      if jax.process_index() != 0:
        return None
      dev = jax.local_devices()[0]
      model = nnx.merge(self.policy_gd, jax.device_put(params, dev), jax.device_put(rest, dev))
    return eval_run.evaluate(model, self.tok, self.eval_problems,
                             self.eval_cfg or EvalConfig(), self.pool,
                             out_dir=self.work_dir / "eval", name=name)

  # ---------------------------------------------------------------- the loop

  def run(self, on_iteration=None) -> list[dict]:
    cfg = self.cfg
    history = []
    ck_cfg = CheckpointConfig()  # gin: checkpoint.save_interval_steps, max_to_keep, async_save
    every = max(1, ck_cfg.save_interval_steps)
    ck_dir = ckpt_lib.checkpoint_dir(self.work_dir)
    ckpt_lib.save_inference_assets(ck_dir, self.models.cfg, self.tok)
    with ckpt_lib.Checkpointer(ck_dir, ck_cfg) as ckpt, \
         metrics_lib.MetricsWriter(self.work_dir) as writer:
      self.maybe_restore(ckpt)
      with metrics_lib.ProgressBar(cfg.num_iterations, initial=self.iteration,
                                   desc="stepcoder") as bar:
        while self.iteration < cfg.num_iterations:
          m = self.iterate()
          if (cfg.eval_every and self.eval_problems and
              (self.iteration % cfg.eval_every == 0 or self.iteration == cfg.num_iterations)):
            rep = self.evaluate(f"step{self.iteration}")
            if rep is not None:
              m.update({f"eval/{k}": v for k, v in rep.metrics().items()})
          writer.write(self.iteration, m)
          bar.update({"reward": m["reward_mean"], "pass": m["pass_rate"]})
          history.append(m)
          if self.iteration % every == 0 or self.iteration == cfg.num_iterations:
            self.save(ckpt)
          if on_iteration is not None:
            on_iteration(self, m)
      ckpt.wait()
    return history
