"""Every device program of a StepCoder run, with abstract arguments on a mesh over any devices.

The programs are built by the functions the run itself uses (`sft.make_sft_step`,
`rollout.make_sampler`, `rollout.make_forward`, `trainer.make_sharded_ppo_step`) with the
placement the Trainer computes (`spmd.make_placement`), so what compiles here is what a run
executes: the same shardings, shapes and dtypes. Nothing is allocated: parameters and optimizer
states are ShapeDtypeStructs carrying their shardings, so a mesh of compile-only devices (a TPU
slice that is not here) works as well as real ones.

Shapes of one iteration: rows = train.problems_per_iteration x train.samples_per_problem padded as
the rollout pads them; prompt and response columns are the power-of-two buckets of
train.max_prompt_tokens / max_new_tokens (`rl/batching.py`). SFT's examples are bucketed by the
data (multiples of 16 up to sft.max_len): here the worst case, sft.max_len columns split like the
RL batch (prompt bucket, the rest for the target).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stepcoder_jax import sharding
from stepcoder_jax.models.config import ModelConfig, remat_policy
from stepcoder_jax.rl import batching, ppo, spmd
from stepcoder_jax.rl.config import PPOConfig, TrainConfig
from stepcoder_jax.runs.config import SFTConfig


@dataclasses.dataclass
class Program:
  """One jitted program and the abstract arguments it is lowered with.

  Attributes:
    name: 'sft_step', 'sampler', 'scoring', 'ppo_update'.
    jitted: the jax.jit-wrapped function.
    args: abstract arguments (ShapeDtypeStructs with shardings).
    model_flops: 2 x matmul parameters x tokens per forward (6 x with the backward) for the
      whole mesh: the usual MFU numerator (no rematerialization, no attention scores).
    tokens: tokens the program processes (the whole mesh).
    expected_flops: the matrix-product FLOPs the program should execute by k x N x tokens
      (k = 2 forward, 6 with the backward, 8 with a rematerialized forward; the output matrix
      only on the columns it projects): the cross-check of the compiled FLOPs, which are above
      it by the attention scores alone.
    resident_bytes: per device, what lives in memory during the program besides its arguments
      (the rest of the training state, the reference policy).
    loop_trips: iterations assumed for loops whose bound is data (the sampler's decode loop:
      train.max_new_tokens, every row running to the limit).
    in_iteration: part of one RL iteration (SFT is a stage before it).
  """

  name: str
  jitted: Callable
  args: tuple
  model_flops: float
  tokens: int
  expected_flops: float
  resident_bytes: int = 0
  loop_trips: int = 1
  in_iteration: bool = True


def device_bytes(tree: Any) -> int:
  """Bytes one device holds of an abstract tree (ShapeDtypeStructs with shardings)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


def head_params(cfg: ModelConfig) -> int:
  """Parameters of the output projection (over the output vocabulary when one is set)."""
  rows = len(cfg.output_vocab) if cfg.output_vocab is not None else cfg.vocab_size
  return rows * cfg.hidden_size


def matmul_params(cfg: ModelConfig) -> int:
  """Parameters used in matrix products per token (the output matrix included, the embedding
  lookup not): N of 2N FLOPs per token."""
  d, hd = cfg.hidden_size, cfg.head_dim
  attn = d * cfg.num_heads * hd * 2 + d * cfg.num_kv_heads * hd * 2
  mlp = 3 * d * cfg.intermediate_size
  return cfg.num_layers * (attn + mlp) + head_params(cfg)


@dataclasses.dataclass(frozen=True)
class Shapes:
  rows: int
  prompt_len: int
  response_len: int
  new_bucket: int
  max_new_tokens: int
  sft_rows: int
  sft_prompt: int
  sft_target: int


def run_shapes(
  cfg: TrainConfig, ppo_cfg: PPOConfig, sft_cfg: SFTConfig, row_divisor: int
) -> Shapes:
  """The array shapes of the run (see the module docstring)."""
  from stepcoder_jax.sampling import bucket as sample_bucket

  prompt = batching.bucket(cfg.max_prompt_tokens)
  rows = cfg.problems_per_iteration * cfg.samples_per_problem
  multiple = math.lcm(max(1, ppo_cfg.minibatches * ppo_cfg.grad_accum), row_divisor)
  rows = -(-rows // multiple) * multiple
  sft_prompt = min(prompt, max(16, sft_cfg.max_len // 2))
  sft_target = max(16, sft_cfg.max_len - sft_prompt)
  return Shapes(
    rows=rows,
    prompt_len=prompt,
    response_len=batching.bucket(cfg.max_new_tokens),
    new_bucket=sample_bucket(cfg.max_new_tokens),
    max_new_tokens=cfg.max_new_tokens,
    sft_rows=sft_cfg.batch_size,
    sft_prompt=sft_prompt,
    sft_target=sft_target,
  )


def _sds(shape, dtype, shard) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(shape), jnp.dtype(dtype), sharding=shard)


def _abstract_run_state(model_cfg: ModelConfig, ppo_cfg: PPOConfig, sft_cfg: SFTConfig):
  """Graph definitions and abstract states of the PPO TrainState and of SFT, no memory used."""
  from stepcoder_jax.models.decoder import Decoder
  from stepcoder_jax.models.value import ValueModel
  from stepcoder_jax.runs import sft

  static: dict[str, Any] = {}
  tx = sft.make_optimizer(sft_cfg)

  def build():
    with nnx.use_eager_sharding(False):
      policy = Decoder(model_cfg, nnx.Rngs(0))
      value = None if ppo_cfg.critic_free else ValueModel.from_policy(policy)
    static["pgd"], static["vgd"], state = ppo.init_train_state(policy, value, ppo_cfg)
    static["sft_gd"], params, rest = nnx.split(policy, nnx.Param, ...)
    return state, (params, tx.init(params), rest)

  state, sft_state = jax.eval_shape(build)
  return static, state, sft_state, tx


def build(
  model_cfg: ModelConfig, cfg: TrainConfig, ppo_cfg: PPOConfig, sft_cfg: SFTConfig, mesh, rules
) -> tuple[list[Program], Shapes, dict[str, int]]:
  """The run's programs on `mesh`, their shapes, and per-device bytes of what stays resident.

  Raises UserError (one line) when the rollout rows or SFT's batch do not split over the batch
  axes of the mesh.
  """
  from stepcoder_jax.rl import rollout
  from stepcoder_jax.runs import sft, trainer

  static, state, (params, opt, rest), tx = _abstract_run_state(model_cfg, ppo_cfg, sft_cfg)
  pl = spmd.make_placement(state, mesh, rules)
  trainer._check_config(cfg, ppo_cfg)  # the Trainer's own checks, so the same one-line errors
  trainer._check_rows(cfg, pl)
  shapes = run_shapes(cfg, ppo_cfg, sft_cfg, pl.row_divisor)
  sft.check_batch_split(sft_cfg.batch_size, mesh, rules)
  a_state = sharding.with_shardings(state, pl.state)
  a_ref = sharding.with_shardings(state.policy, pl.ref)
  n = matmul_params(model_cfg)
  head = head_params(model_cfg)
  body = n - head
  models = 1 if ppo_cfg.critic_free else 2
  b, p, r = shapes.rows, shapes.prompt_len, shapes.response_len
  t = p + r
  b2, rep = pl.batch(2), pl.replicated
  resident = {"train_state": device_bytes(a_state), "reference": device_bytes(a_ref)}
  opt_and_value = device_bytes(
    (a_state.policy_opt, a_state.value, a_state.value_rest, a_state.value_opt)
  )
  # a rematerialized forward inside the backward ('dots' recomputes no matmul)
  remat = 2 if remat_policy(model_cfg.remat) == "full" else 0
  programs = []

  # SFT: its own stage, before RL (nothing else resident).
  sft_sh = sft.sft_shardings(mesh, rules, params, opt, rest)
  step = sft.make_sft_step(
    static["sft_gd"],
    None,
    tx,
    sft_cfg.logprob_chunk,
    prompt_len=shapes.sft_prompt,
    shardings=sft_sh,
  )
  st = shapes.sft_prompt + shapes.sft_target
  sft_batch = {
    k: _sds((shapes.sft_rows, st), jnp.int32, sft_sh.batch)
    for k in ("tokens", "positions", "attention_mask", "response_mask")
  }
  programs.append(
    Program(
      "sft_step",
      step.jitted,
      (
        sharding.with_shardings(params, sft_sh.params),
        sharding.with_shardings(opt, sft_sh.opt_state),
        sharding.with_shardings(rest, sft_sh.rest),
        sft_batch,
      ),
      model_flops=6 * n * shapes.sft_rows * st,
      tokens=shapes.sft_rows * st,
      expected_flops=shapes.sft_rows * ((6 + remat) * body * st + 6 * head * shapes.sft_target),
      in_iteration=False,
    )
  )

  # Sampler: prefill + decode loop over the KV cache, with the policy's parameters.
  sampler = rollout.make_sampler(
    static["pgd"], shapes.max_new_tokens, model_cfg.eos_ids, _pad_id(model_cfg), p, pl
  )
  knobs = tuple(_sds((), np.asarray(v).dtype, rep) for v in sampler.settings)
  programs.append(
    Program(
      "sampler",
      sampler.jitted,
      (
        a_state.policy,
        a_state.policy_rest,
        _sds((b, p), jnp.int32, b2),
        _sds((b, p), bool, b2),
        _sds((2,), jnp.uint32, rep),
      )
      + knobs,
      model_flops=2 * n * b * (p + shapes.max_new_tokens),
      tokens=b * (p + shapes.max_new_tokens),
      # the prompt's last column and every drawn token are projected onto the vocabulary
      expected_flops=2
      * b
      * (body * (p + shapes.max_new_tokens) + head * (shapes.max_new_tokens + 1)),
      resident_bytes=resident["reference"] + opt_and_value,
      loop_trips=shapes.max_new_tokens,
    )
  )

  # Scoring: reference log-probs (and values; old log-probs too without the sampler's).
  fwd = rollout.make_forward(static["pgd"], static["vgd"], cfg.logprob_chunk, pl, response_start=p)
  cols = [
    _sds((b, t), ppo.BATCH_DTYPES[k], b2)
    for k in ("tokens", "positions", "attention_mask", "response_mask")
  ]
  forwards = models + (0 if cfg.sampler_logprobs else 1)
  if cfg.sampler_logprobs:
    scoring = (
      fwd.jitted["from_sampler"],
      (a_state, a_ref, *cols, _sds((b, shapes.new_bucket), jnp.float32, b2)),
    )
  else:
    scoring = (fwd.jitted["scored"], (a_state, a_ref, *cols))
  policy_forwards = forwards - (models - 1)  # the value model projects no vocabulary
  programs.append(
    Program(
      "scoring",
      scoring[0],
      scoring[1],
      model_flops=2 * n * b * t * forwards,
      tokens=b * t * forwards,
      expected_flops=2 * b * (body * t * forwards + head * r * policy_forwards),
    )
  )

  # The update: PPO (policy + value) or critic-free, every epoch and minibatch.
  update = trainer.make_sharded_ppo_step(
    static["pgd"], static["vgd"], ppo_cfg, pl, response_start=p
  )
  shards = pl.batch_shardings(ppo_cfg)
  batch = ppo.Batch(
    **{
      k: _sds((b,) if k in ppo.ROW_FIELDS else (b, t), ppo.BATCH_DTYPES[k], getattr(shards, k))
      for k in ppo.batch_fields(ppo_cfg)
    }
  )
  tok = b * t * ppo_cfg.epochs * models
  programs.append(
    Program(
      "ppo_update",
      update.jitted,
      (a_state, batch),
      model_flops=6 * n * tok,
      tokens=tok,
      expected_flops=ppo_cfg.epochs * b * ((6 + remat) * body * t * models + 6 * head * r),
      resident_bytes=resident["reference"],
    )
  )
  return programs, shapes, resident


def _pad_id(cfg: ModelConfig) -> int:
  if cfg.pad_token_id is not None:
    return int(cfg.pad_token_id)
  return cfg.eos_ids[0] if cfg.eos_ids else 0
