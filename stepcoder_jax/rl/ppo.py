"""StepCoder PPO: pure GAE and losses, and a jitted `ppo_step(state, batch) -> (state, metrics)`.

Per-token conventions (shared with rl/batching.py): every `[B, T]` array indexed by t describes
token t. `logprobs[t] = log pi(tokens[t] | tokens[:t])`, computed from the hidden state at t - 1;
`values[t]` = V(tokens[:t]), the value of the state in which token t was chosen (also read at
t - 1). Column 0 has no predecessor and holds 0. `response_mask[t]` = 1 for generated tokens
only (never the question or the CCCS prefix); `fgo_mask[t]` = 0 for tokens FGO drops.
`policy_logprobs` and `value_estimates` below compute the rollout's old/ref log-probs and values
with exactly these conventions.

The step: rewards (scalar outcome on the last response token) minus the per-token KL penalty
kl_coef * (old_logprob - ref_logprob) -> GAE(gamma, lambda) over response tokens -> advantages
whitened over the response tokens of the whole rollout batch -> epochs x minibatches optimizer
updates (lax.scan), each summing the gradients of `grad_accum` micro-batches. Every loss term is
divided by the number of RESPONSE tokens of the whole minibatch, so accumulation gives the same
gradient as one big micro-batch, and all ablation arms share one normalization: the policy loss
and the entropy bonus sum over `response_mask * fgo_mask` (FGO zeroes the masked tokens' terms
and leaves the weight of the others unchanged); the value loss sums over `response_mask` (FGO
concerns which tokens the policy is credited for, not how well returns are predicted).

Critic-free estimators (`ppo.advantage = 'grpo' | 'rloo'`) replace the value model and GAE. The
batch then carries `group` [B] int32 (rows sampled from the same prompt share an id in [0, B))
and no `values`. A row's sequence reward is its outcome reward minus kl_coef x its summed
per-token KL to the reference (as in TRL's RLOO: the KL penalty is part of what the group
baseline compares), or the outcome alone with the KL in the loss (`ppo.kl_in_loss`, by default
for these estimators); its advantage against the group is given to every response token. Group
statistics are segment sums over the global [B] arrays inside the jitted step, so they are right
however the rows are split over devices or processes.
There is no value model, value loss or value optimizer: the TrainState's value fields are None.
With the KL in the loss (`PPOConfig.kl_loss`, any estimator) it leaves the reward and becomes a
loss term, kl_coef x the k3 estimator exp(ref - new) - (ref - new) - 1 per token, summed over the
same FGO-kept response tokens and divided by the same response-token count as the policy loss.

Options the RL-for-LLM frameworks have (rl/config.py names each one's anchor): `loss_agg`
'seq-mean-token-mean' weighs each sequence equally instead of each token (`token_weights`);
`clip_eps_high` is a separate upper ratio clip; `filter_groups` drops the rows of groups whose
outcome rewards are all equal (`group_signal`): they leave the response mask of the update, so
they neither get a loss term nor count in its token denominator; `critic_warmup` leaves the
policy and its optimizer state untouched (`gated`) for the first steps. A step in which no row is
left to train on leaves the policy untouched too (Adam's momentum would otherwise still move it).
`signal_fraction` is the share of groups (GAE: of rows) with a non-zero advantage.

`fgo_mask` is an ordinary array operand: FGO off is the same compiled function with a mask of
ones (the rollout builds it with `fgo.token_mask(..., enabled=False)`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stepcoder_jax.rl.config import PPOConfig


@flax.struct.dataclass
class Batch:
  """One rollout batch, every array at the dtype the jitted step is compiled for.

  Built once by the rollout (`Batch.of` casts, so an int8 FGO mask and a float mask of ones hit
  the same compiled step); the placement gives its shardings as a Batch of the same shape.
  `values` is None for a critic-free `ppo.advantage`, `group` is None for GAE.

  Attributes:
    tokens, positions: [B, T] int32.
    attention_mask: [B, T] int32 (1 on real tokens).
    response_mask, fgo_mask: [B, T] float32 (1 on response tokens / on tokens FGO keeps).
    old_logprobs, ref_logprobs: [B, T] float32, zero outside the response.
    rewards: [B] float32 outcome rewards (or [B, T] already placed on the last token).
    values: [B, T] float32 rollout values (GAE only).
    group: [B] int32 prompt id of each row in [0, B) (critic-free only).
  """

  tokens: jax.Array
  positions: jax.Array
  attention_mask: jax.Array
  response_mask: jax.Array
  fgo_mask: jax.Array
  old_logprobs: jax.Array
  ref_logprobs: jax.Array
  rewards: jax.Array
  values: jax.Array | None = None
  group: jax.Array | None = None

  @classmethod
  def of(cls, arrays: Mapping[str, Any]) -> "Batch":
    """A Batch from named arrays, each cast to its dtype (absent optional fields: None)."""
    return cls(
      **{
        k: None if arrays.get(k) is None else jnp.asarray(arrays[k], BATCH_DTYPES[k])
        for k in BATCH_DTYPES
      }
    )

  def replace_fields(self, **arrays) -> "Batch":
    """A copy with some arrays replaced, cast like `of`."""
    return self.replace(**{k: jnp.asarray(v, BATCH_DTYPES[k]) for k, v in arrays.items()})


BATCH_DTYPES = {
  "tokens": jnp.int32,
  "positions": jnp.int32,
  "attention_mask": jnp.int32,
  "response_mask": jnp.float32,
  "fgo_mask": jnp.float32,
  "old_logprobs": jnp.float32,
  "ref_logprobs": jnp.float32,
  "rewards": jnp.float32,
  "values": jnp.float32,
  "group": jnp.int32,
}
ROW_FIELDS = ("rewards", "group")  # [B]; every other field is [B, T]


def batch_fields(cfg: PPOConfig) -> tuple[str, ...]:
  """The Batch fields the step built for `cfg` reads: `values` for GAE, `group` critic-free."""
  drop = "values" if cfg.critic_free else "group"
  return tuple(k for k in BATCH_DTYPES if k != drop)


# ----------------------------------------------------------------------------- pure math


def masked_sum(x: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(jnp.where(mask > 0, x, 0.0))


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over mask > 0 (0 for an empty mask); masked entries get exactly zero gradient."""
  return masked_sum(x, mask) / jnp.maximum(jnp.sum(mask > 0), 1)


def masked_var(x: jax.Array, mask: jax.Array) -> jax.Array:
  mean = masked_mean(x, mask)
  return masked_mean(jnp.square(x - mean), mask)


def masked_whiten(
  x: jax.Array, mask: jax.Array, eps: float = 1e-8, min_std: float = 0.0
) -> jax.Array:
  """(x - mean) / max(std, min_std) over the masked entries; unmasked entries become 0.

  `min_std` > 0 keeps a batch whose programs all earned the same reward (advantages that differ
  only by the small KL term) from being blown up to unit variance: noise, not signal.
  """
  mean = masked_mean(x, mask)
  std = jnp.sqrt(masked_var(x, mask) + eps)
  return jnp.where(mask > 0, (x - mean) / jnp.maximum(std, min_std), 0.0)


def kl_penalized_rewards(
  rewards: jax.Array,
  old_logprobs: jax.Array,
  ref_logprobs: jax.Array,
  response_mask: jax.Array,
  kl_coef: jax.Array | float,
) -> jax.Array:
  """Per-token rewards: the outcome reward minus kl_coef * (log pi_old - log pi_ref)."""
  kl = jnp.where(response_mask > 0, old_logprobs - ref_logprobs, 0.0)
  return rewards - kl_coef * kl


def gae(
  rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float, lam: float
) -> tuple[jax.Array, jax.Array]:
  """Generalized advantage estimation along the last axis, over the tokens with mask > 0.

  The response is the contiguous run of masked tokens; the episode ends after its last token
  (no bootstrap value there). Unmasked tokens get advantage and return 0.

  Args:
    rewards, values, mask: [B, T].
  Returns:
    (advantages, returns) [B, T], returns = advantages + values on the masked tokens.
  """
  m = (mask > 0).astype(jnp.float32)
  r = rewards.astype(jnp.float32) * m
  v = values.astype(jnp.float32) * m
  next_v = jnp.concatenate([v[:, 1:], jnp.zeros_like(v[:, :1])], axis=1)
  delta = r + gamma * next_v - v

  def back(carry, x):
    d, mt = x
    a = mt * (d + gamma * lam * carry)
    return a, a

  _, adv = jax.lax.scan(back, jnp.zeros(r.shape[0], jnp.float32), (delta.T, m.T), reverse=True)
  adv = adv.T
  return adv, (adv + v) * m


def _group_sums(x: jax.Array, group: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(size, sum of x) of each row's group, per row; ids in [0, B)."""
  n = x.shape[0]
  count = jax.ops.segment_sum(jnp.ones_like(x), group, num_segments=n)
  total = jax.ops.segment_sum(x, group, num_segments=n)
  return count[group], total[group]


def grpo_advantages(
  rewards: jax.Array, group: jax.Array, scale_std: bool = True, min_std: float = 0.1
) -> jax.Array:
  """GRPO: (r - group mean) / max(group std, min_std); [B] -> [B].

  The std is the population std of the group (a group of one has std 0 and advantage 0).
  `scale_std` False leaves the centred reward unscaled.
  """
  r = rewards.astype(jnp.float32)
  count, total = _group_sums(r, group)
  centred = r - total / count
  if not scale_std:
    return centred
  _, sq = _group_sums(jnp.square(centred), group)
  return centred / jnp.maximum(jnp.sqrt(sq / count), min_std)


def rloo_advantages(rewards: jax.Array, group: jax.Array) -> jax.Array:
  """RLOO: r minus the mean of the OTHER samples of its group; [B] -> [B].

  A group of one has no baseline and gets advantage 0 (no signal rather than a raw reward).
  """
  r = rewards.astype(jnp.float32)
  count, total = _group_sums(r, group)
  baseline = (total - r) / jnp.maximum(count - 1.0, 1.0)
  return jnp.where(count > 1, r - baseline, 0.0)


def group_advantages(rewards: jax.Array, group: jax.Array, cfg: PPOConfig) -> jax.Array:
  """The sequence-level advantage [B] of the critic-free estimator `cfg.advantage`."""
  if cfg.advantage == "grpo":
    return grpo_advantages(rewards, group, cfg.grpo_scale_std, cfg.grpo_min_std)
  if cfg.advantage == "rloo":
    return rloo_advantages(rewards, group)
  raise ValueError(f"ppo.advantage: {cfg.advantage!r} is not a critic-free estimator")


def group_signal(rewards: jax.Array, group: jax.Array) -> jax.Array:
  """[B] bool: the row's group has outcome rewards that are not all equal (so some advantage)."""
  r = rewards.astype(jnp.float32)
  n = r.shape[0]
  hi = jax.ops.segment_max(r, group, num_segments=n)
  lo = jax.ops.segment_min(r, group, num_segments=n)
  return hi[group] > lo[group]


def signal_fraction(has_signal: jax.Array, leader: jax.Array) -> jax.Array:
  """Share of the counted units (groups or rows: `leader` [B] bool, one per unit) with signal."""
  lead = leader.astype(jnp.float32)
  return jnp.sum(jnp.where(has_signal, lead, 0.0)) / jnp.maximum(jnp.sum(lead), 1.0)


def token_weights(response_mask: jax.Array, loss_agg: str) -> jax.Array | None:
  """Per-token weights [B, T] that turn 'sum / response tokens' into `loss_agg`.

  'token-mean': None (every token weighs 1). 'seq-mean-token-mean': a token of row b weighs
  N / (rows x n_b), with N the response tokens of the batch, n_b those of row b and rows the
  rows that have any, so sum(w x loss) / N is the mean over rows of each row's token mean.
  """
  if loss_agg == "token-mean":
    return None
  if loss_agg != "seq-mean-token-mean":
    raise ValueError(f"ppo.loss_agg: {loss_agg!r}")
  m = (response_mask > 0).astype(jnp.float32)
  per_row = jnp.sum(m, axis=1, keepdims=True)
  rows = jnp.maximum(jnp.sum(per_row > 0), 1)
  return m * jnp.sum(m) / (rows * jnp.maximum(per_row, 1.0))


def gated(on: jax.Array, new: Any, old: Any) -> Any:
  """`new` where the scalar `on` holds, else `old`, leaf by leaf (an update that is skipped)."""
  return jax.tree.map(lambda a, b: jnp.where(on, a, b), new, old)


def kl_to_ref_k3(logprobs: jax.Array, ref_logprobs: jax.Array, mask: jax.Array) -> jax.Array:
  """Per-token k3 estimate of KL(new || ref): exp(d) - d - 1 with d = ref - new (>= 0), zero
  where mask = 0 (d is zeroed before exp, so padding cannot overflow)."""
  d = jnp.where(mask > 0, ref_logprobs - logprobs, 0.0)
  return jnp.where(mask > 0, jnp.exp(d) - d - 1.0, 0.0)


def policy_loss_terms(
  logprobs: jax.Array,
  old_logprobs: jax.Array,
  advantages: jax.Array,
  mask: jax.Array,
  clip_eps: float,
  clip_eps_high: float | None = None,
):
  """Per-token clipped surrogate loss, clip indicator and approximate KL (zero where mask = 0).

  PPO's -min(r A, clip(r, 1 - eps, 1 + eps_high) A) written out so the boundary is explicit: a
  token is clipped (constant loss, no gradient) only when the ratio is strictly beyond
  1 + eps_high with A > 0, or strictly below 1 - eps with A < 0. At exactly the bound the gradient
  still flows. `clip_eps_high` None is clip_eps (symmetric PPO).
  The log-ratio is zeroed outside the mask before exp, so padding can never produce inf/NaN that
  would leak into the gradient of the kept tokens.
  """
  high = clip_eps if clip_eps_high is None else clip_eps_high
  keep = mask > 0
  log_ratio = jnp.where(keep, logprobs - old_logprobs, 0.0)
  ratio = jnp.exp(log_ratio)
  clipped = ((advantages > 0) & (ratio > 1.0 + high)) | (
    (advantages < 0) & (ratio < 1.0 - clip_eps)
  )
  bound = jnp.where(advantages > 0, 1.0 + high, 1.0 - clip_eps)
  loss = -advantages * jnp.where(clipped, bound, ratio)
  approx_kl = (ratio - 1.0) - log_ratio  # k3 estimator of KL(old || new), >= 0
  zero = jnp.zeros_like(loss)
  return (
    jnp.where(keep, loss, zero),
    jnp.where(keep & clipped, 1.0, zero),
    jnp.where(keep, approx_kl, zero),
  )


def token_policy_objective(
  logprobs: jax.Array,
  entropy: jax.Array,
  mb: Mapping[str, jax.Array],
  denom: jax.Array,
  cfg: PPOConfig,
  kl_coef: jax.Array | float,
):
  """The step's policy objective from per-token log-probs and entropies: (total, metrics).

  Sums over `mb["loss_mask"]` (response x FGO) and divides by `denom`, the minibatch's number of
  response tokens, so a token FGO drops has zero gradient and the others keep theirs. With
  `cfg.kl_loss`, adds kl_coef x the k3 KL to `mb["ref_logprobs"]` over the same tokens.
  `mb["token_weight"]` (`token_weights`, present unless 'token-mean') weighs every term's tokens.
  """
  m = mb["loss_mask"]
  w = mb.get("token_weight")
  weigh = (lambda x: x) if w is None else (lambda x: x * w)
  loss, clipped, kl = policy_loss_terms(
    logprobs, mb["old_logprobs"], mb["advantages"], m, cfg.clip_eps, cfg.clip_high
  )
  ent_sum = jnp.sum(weigh(jnp.where(m > 0, entropy, 0.0)))
  pg = jnp.sum(weigh(loss)) / denom
  total = pg - cfg.entropy_coef * ent_sum / denom
  met = {
    "policy_loss": pg,
    "clip_frac": jnp.sum(clipped) / denom,
    "approx_kl": jnp.sum(kl) / denom,
    "entropy": ent_sum / denom,
  }
  if cfg.kl_loss:
    met["kl_loss"] = jnp.sum(weigh(kl_to_ref_k3(logprobs, mb["ref_logprobs"], m))) / denom
    total = total + kl_coef * met["kl_loss"]
  return total, met


def value_loss_terms(
  values: jax.Array, old_values: jax.Array, returns: jax.Array, mask: jax.Array, value_clip: float
):
  """Per-token 0.5 * max((v - R)^2, (v_clipped - R)^2) and its clip indicator."""
  keep = mask > 0
  l1 = jnp.square(values - returns)
  if value_clip > 0:
    v_c = old_values + jnp.clip(values - old_values, -value_clip, value_clip)
    l2 = jnp.square(v_c - returns)
    # Clipped when the new value left the trust region and that side has the larger loss (a
    # comparison of l2 with l1 alone would count one-ulp rounding of old + (v - old) as clipped).
    clipped = (jnp.abs(values - old_values) > value_clip) & (l2 > l1)
    loss = jnp.where(clipped, l2, l1)
  else:
    clipped = jnp.zeros_like(keep)
    loss = l1
  zero = jnp.zeros_like(loss)
  return jnp.where(keep, 0.5 * loss, zero), jnp.where(keep & clipped, 1.0, zero)


def explained_variance(values: jax.Array, returns: jax.Array, mask: jax.Array) -> jax.Array:
  """1 - Var(R - V) / Var(R) over the masked tokens (1 = perfect value predictions)."""
  var_r = masked_var(returns, mask)
  return 1.0 - masked_var(returns - values, mask) / jnp.maximum(var_r, 1e-8)


def adaptive_kl_coef(
  kl_coef: jax.Array, kl: jax.Array, n_steps: int | jax.Array, target: float, horizon: float
) -> jax.Array:
  """Ziegler et al. (2019) proportional controller: move kl_coef so the KL tracks the target."""
  err = jnp.clip(kl / target - 1.0, -0.2, 0.2)
  return kl_coef * (1.0 + err * n_steps / horizon)


def place_rewards(rewards: jax.Array, response_mask: jax.Array) -> jax.Array:
  """[B] outcome rewards -> [B, T] with each on its row's last response token."""
  t = response_mask.shape[1]
  cols = jnp.arange(t)[None, :]
  last = jnp.max(jnp.where(response_mask > 0, cols, -1), axis=1)
  return jnp.where(cols == last[:, None], rewards[:, None], 0.0).astype(jnp.float32)


# ----------------------------------------------------------------------------- model forwards


def _shift_right(x: jax.Array) -> jax.Array:
  """Column t gets what was computed at t - 1; column 0 gets 0."""
  return jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, :-1]], axis=1)


def policy_logprobs(
  model,
  tokens,
  positions,
  attention_mask,
  *,
  chunk: int,
  with_entropy: bool = True,
  response_start: int | None = None,
):
  """Per-token log pi(tokens[t] | tokens[:t]) (and entropy of that distribution), [B, T] f32.

  Goes through the chunked `logprobs.token_logprobs`, so no [B, T, V] logits exist at once.
  `response_start` (static): the column where every row's response begins (the batch layout puts
  it at the prompt bucket P). Only columns >= it get the output projection, the dominant cost
  with a large vocabulary; earlier columns are 0, which the response mask ignores anyway.

  With `model.cfg.output_vocab` the softmax (and the entropy) is over that subset, the one the
  sampler draws from, so old, reference and new log-probs share one distribution and PPO's ratio
  stays exact; a target outside it (never a sampled token) scores OUTSIDE_VOCAB_LOGP.
  """
  from stepcoder_jax.models import logprobs as lp  # the models' chunked log-softmax

  hidden, _ = model(tokens, positions, attention_mask)
  w, softcap, vocab = model.output_head()
  s = 1 if response_start is None else max(1, int(response_start))
  logp, ent = lp.token_logprobs(
    hidden[:, s - 1 : -1], w, tokens[:, s:], chunk=chunk, softcap=softcap, vocab=vocab
  )
  logp = jnp.pad(logp, ((0, 0), (s, 0)))
  ent = jnp.pad(ent, ((0, 0), (s, 0)))
  return (logp, ent) if with_entropy else logp


def value_estimates(value_model, tokens, positions, attention_mask) -> jax.Array:
  """values[t] = V(tokens[:t]): the value head read at t - 1, [B, T] f32."""
  v = value_model(tokens, positions, attention_mask)
  return _shift_right(v.astype(jnp.float32))


# ----------------------------------------------------------------------------- train state


@flax.struct.dataclass
class TrainState:
  """Everything `ppo_step` updates: a pytree (checkpointable with orbax as is).

  Attributes:
    policy, value: nnx.Param states of the policy and value models.
    policy_rest, value_rest: their non-trainable variables (often empty).
    policy_opt, value_opt: optax states (separate learning rates, schedules and clipping).
      With a critic-free `ppo.advantage`, value, value_rest and value_opt are None: empty
      pytrees, so nothing of a value model is placed, sharded, donated or checkpointed.
    step: number of ppo_steps taken.
    kl_coef: the current KL penalty coefficient (adapted when ppo.adaptive_kl).
  """

  policy: Any
  value: Any
  policy_rest: Any
  value_rest: Any
  policy_opt: Any
  value_opt: Any
  step: jax.Array
  kl_coef: jax.Array


def lr_schedule(peak: float, cfg: PPOConfig) -> optax.Schedule:
  """Linear warmup to `peak`, then constant or cosine decay to 10% at cfg.decay_steps."""
  if cfg.lr_schedule == "constant":
    after = optax.constant_schedule(peak)
  elif cfg.lr_schedule == "cosine":
    after = optax.cosine_decay_schedule(peak, max(1, cfg.decay_steps - cfg.warmup_steps), 0.1)
  else:
    raise ValueError(f"ppo.lr_schedule: {cfg.lr_schedule!r} is not 'constant' or 'cosine'")
  if cfg.warmup_steps <= 0:
    return after
  warm = optax.linear_schedule(0.0, peak, cfg.warmup_steps)
  return optax.join_schedules([warm, after], [cfg.warmup_steps])


def make_optimizer(peak_lr: float, max_grad_norm: float, cfg: PPOConfig):
  parts = []
  if max_grad_norm > 0:
    parts.append(optax.clip_by_global_norm(max_grad_norm))
  parts.append(
    optax.adamw(
      lr_schedule(peak_lr, cfg),
      b1=cfg.adam_b1,
      b2=cfg.adam_b2,
      eps=cfg.adam_eps,
      weight_decay=cfg.weight_decay,
    )
  )
  return optax.chain(*parts)


def make_optimizers(cfg: PPOConfig):
  """(policy_tx, value_tx): built the same way by `init_train_state` and `make_ppo_step`."""
  return (
    make_optimizer(cfg.policy_lr, cfg.max_grad_norm, cfg),
    make_optimizer(cfg.value_lr, cfg.value_max_grad_norm, cfg),
  )


def trainable(cfg: PPOConfig):
  """The nnx filter of trained parameters. With `train_embeddings` off, the token embedding
  (also the tied output matrix) joins the frozen `*_rest` states: no gradient, no Adam moments,
  which for Gemma 3's 262k x 640 table saves about 4 GB per model in a PPO step."""
  if cfg.train_embeddings:
    return nnx.Param
  return nnx.All(nnx.Param, nnx.Not(nnx.PathContains("embed")))


def init_train_state(policy_model: nnx.Module, value_model: nnx.Module | None, cfg: PPOConfig):
  """Split the models into graph definitions and a TrainState.

  `value_model` is None exactly when `cfg.critic_free` (then the value graphdef and the value
  fields of the state are None).

  Returns:
    (policy_graphdef, value_graphdef, state).
  """
  if cfg.critic_free != (value_model is None):
    raise ValueError(
      f"ppo.advantage={cfg.advantage!r} {'takes no' if cfg.critic_free else 'needs a'} value model"
    )
  pgd, pparams, prest = nnx.split(policy_model, trainable(cfg), ...)
  ptx, vtx = make_optimizers(cfg)
  vgd = vparams = vrest = vopt = None
  if value_model is not None:
    vgd, vparams, vrest = nnx.split(value_model, trainable(cfg), ...)
    vopt = vtx.init(vparams)
  state = TrainState(
    policy=pparams,
    value=vparams,
    policy_rest=prest,
    value_rest=vrest,
    policy_opt=ptx.init(pparams),
    value_opt=vopt,
    step=jnp.zeros((), jnp.int32),
    kl_coef=jnp.asarray(cfg.kl_coef, jnp.float32),
  )
  return pgd, vgd, state


# ----------------------------------------------------------------------------- the step


def check_batch(batch: Batch, cfg: PPOConfig) -> None:
  """Fail before compiling when the batch does not fit the step built for `cfg`."""
  keys = batch_fields(cfg)
  missing = [k for k in keys if getattr(batch, k) is None]
  if missing:
    raise ValueError(f"ppo batch: missing field(s) {missing} (ppo.advantage={cfg.advantage!r})")
  b = batch.tokens.shape[0]
  per = cfg.minibatches * cfg.grad_accum
  if b % per:
    raise ValueError(
      f"ppo batch: {b} rows are not divisible by ppo.minibatches x ppo.grad_accum"
      f" = {cfg.minibatches} x {cfg.grad_accum}"
    )
  for k in keys:
    x = getattr(batch, k)
    if x.shape[0] != b or (k not in ROW_FIELDS and x.shape != batch.tokens.shape):
      raise ValueError(f"ppo batch: {k!r} has shape {x.shape}, tokens {batch.tokens.shape}")
  if batch.group is not None and "group" in keys:
    if batch.group.ndim != 1:
      raise ValueError(f"ppo batch: 'group' has shape {batch.group.shape}, want [{b}]")
    if getattr(batch.group, "is_fully_addressable", True):
      g = np.asarray(batch.group)
      if g.size and (g.min() < 0 or g.max() >= b):
        raise ValueError(f"ppo batch: group ids must be in [0, {b}), got [{g.min()}, {g.max()}]")


def make_ppo_step(
  policy_graphdef,
  value_graphdef,
  cfg: PPOConfig,
  *,
  in_shardings: Any = None,
  out_shardings: Any = None,
  donate: bool = True,
  response_start: int | None = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict]]:
  """Build the jitted `ppo_step(state, batch) -> (state, metrics)`.

  Args:
    policy_graphdef, value_graphdef: from `init_train_state` (value None when critic-free).
    cfg: PPOConfig (static).
    in_shardings, out_shardings: passed to jax.jit as is (e.g. from sharding.py); None lets jit
      infer them from the arguments.
    donate: donate the input state's buffers (halves peak memory; the caller must not reuse the
      state it passed in).
    response_start: the first response column of every batch (see `policy_logprobs`); None
      projects every column.
  """
  critic_free = cfg.critic_free
  if not critic_free and value_graphdef is None:
    raise ValueError("ppo.advantage='gae' needs the value model's graphdef")
  ptx, vtx = make_optimizers(cfg)
  vclip = cfg.value_clip

  def policy_objective(params, rest, mb, denom, kl_coef):
    model = nnx.merge(policy_graphdef, params, rest)
    logp, ent = policy_logprobs(
      model,
      mb["tokens"],
      mb["positions"],
      mb["attention_mask"],
      chunk=cfg.logprob_chunk,
      response_start=response_start,
    )
    return token_policy_objective(logp, ent, mb, denom, cfg, kl_coef)

  def value_objective(params, rest, mb, denom):
    model = nnx.merge(value_graphdef, params, rest)
    v = value_estimates(model, mb["tokens"], mb["positions"], mb["attention_mask"])
    loss, clipped = value_loss_terms(v, mb["values"], mb["returns"], mb["response_mask"], vclip)
    vl = jnp.sum(loss) / denom
    return vl, {"value_loss": vl, "value_clip_frac": jnp.sum(clipped) / denom}

  p_grad = jax.value_and_grad(policy_objective, has_aux=True)
  v_grad = jax.value_and_grad(value_objective, has_aux=True)
  metric_keys = ("policy_loss", "clip_frac", "approx_kl", "entropy")
  if cfg.kl_loss:
    metric_keys += ("kl_loss",)
  if not critic_free:
    metric_keys += ("value_loss", "value_clip_frac")

  def split(x, n):
    return x.reshape((n, x.shape[0] // n) + x.shape[1:])

  def scan(f, carry, xs):
    """lax.scan, or a plain call when there is one step: a loop carries (and, on CPU, double
    buffers) params + optimizer states, which for a 270M model is gigabytes for nothing."""
    n = jax.tree.leaves(xs)[0].shape[0]
    if n != 1:
      return jax.lax.scan(f, carry, xs)
    carry, y = f(carry, jax.tree.map(lambda x: x[0], xs))
    return carry, jax.tree.map(lambda v: v[None], y)

  add = lambda a, b: jax.tree.map(jnp.add, a, b)
  zeros = lambda t: jax.tree.map(jnp.zeros_like, t)

  gate_policy = cfg.critic_warmup > 0 or cfg.filter_groups

  def update(kl_coef, policy_on, carry, mb):
    """One optimizer update of both models (or the policy alone) from one minibatch."""
    pparams, vparams, popt, vopt, prest, vrest = carry
    den = jnp.maximum(jnp.sum(mb["response_mask"]), 1.0)  # one denominator for every term
    w = token_weights(mb["response_mask"], cfg.loss_agg)
    if w is not None:
      mb = {**mb, "token_weight": w}

    def micro(acc, mu):
      pg, vg, met = acc
      (_, pm), g1 = p_grad(pparams, prest, mu, den, kl_coef)
      if critic_free:
        return (add(pg, g1), vg, add(met, pm)), None
      (_, vm), g2 = v_grad(vparams, vrest, mu, den)
      return (add(pg, g1), add(vg, g2), add(met, {**pm, **vm})), None

    met0 = {k: jnp.zeros((), jnp.float32) for k in metric_keys}
    (pg, vg, met), _ = scan(
      micro,
      (zeros(pparams), zeros(vparams), met0),
      jax.tree.map(lambda x: split(x, cfg.grad_accum), mb),
    )
    met["policy_grad_norm"] = optax.tree.norm(pg)
    met["grad_clipped"] = (
      (met["policy_grad_norm"] > cfg.max_grad_norm).astype(jnp.float32)
      if cfg.max_grad_norm > 0
      else jnp.zeros((), jnp.float32)
    )
    pu, popt_new = ptx.update(pg, popt, pparams)
    pnew = optax.apply_updates(pparams, pu)
    if gate_policy:
      on = policy_on & (jnp.sum(mb["loss_mask"]) > 0)
      pnew, popt_new = gated(on, (pnew, popt_new), (pparams, popt))
    pparams, popt = pnew, popt_new
    if not critic_free:
      met["value_grad_norm"] = optax.tree.norm(vg)
      vu, vopt = vtx.update(vg, vopt, vparams)
      vparams = optax.apply_updates(vparams, vu)
    return (pparams, vparams, popt, vopt, prest, vrest), met

  def advantages(batch, rewards, resp, old_lp, ref_lp, kl_coef):
    """Per-token advantages [B, T], and the GAE returns and rollout values (None critic-free)."""
    kl = 0.0 if cfg.kl_loss else kl_coef
    if critic_free:
      seq = jnp.sum(kl_penalized_rewards(rewards, old_lp, ref_lp, resp, kl), axis=1)
      adv = group_advantages(seq, batch.group, cfg)
      return adv[:, None] * resp, None, None
    old_v = batch.values
    adv, ret = gae(
      kl_penalized_rewards(rewards, old_lp, ref_lp, resp, kl), old_v, resp, cfg.gamma, cfg.lam
    )
    if cfg.whiten_advantages:
      adv = masked_whiten(adv, resp, min_std=cfg.whiten_min_std)
    return adv, ret, old_v

  def ppo_step(state: TrainState, batch: Batch):
    resp = batch.response_mask
    loss_mask = resp * batch.fgo_mask
    rewards = batch.rewards
    if rewards.ndim == 1:
      rewards = place_rewards(rewards, resp)
    old_lp, ref_lp = batch.old_logprobs, batch.ref_logprobs
    adv, ret, old_v = advantages(batch, rewards, resp, old_lp, ref_lp, state.kl_coef)
    b = batch.tokens.shape[0]
    has_resp = jnp.sum(resp, axis=1) > 0
    if critic_free:
      signal = group_signal(jnp.sum(rewards, axis=1), batch.group)
      units = has_resp & (batch.group == jnp.arange(b))  # one row (its first) per group
    else:
      signal = jnp.any(jnp.where(resp > 0, adv, 0.0) != 0, axis=1)
      units = has_resp
    train_resp, train_mask = resp, loss_mask
    if cfg.filter_groups:  # dynamic sampling: groups without signal leave the update
      train_resp = resp * signal[:, None].astype(resp.dtype)
      train_mask = loss_mask * signal[:, None].astype(resp.dtype)
    data = {
      "tokens": batch.tokens,
      "positions": batch.positions,
      "attention_mask": batch.attention_mask,
      "response_mask": train_resp,
      "loss_mask": train_mask,
      "old_logprobs": old_lp,
      "advantages": adv,
    }
    if cfg.kl_loss:
      data["ref_logprobs"] = ref_lp
    if not critic_free:
      data.update(values=old_v, returns=ret)
    key = jax.random.fold_in(jax.random.key(cfg.seed), state.step)
    step_update = functools.partial(update, state.kl_coef, state.step >= cfg.critic_warmup)

    def epoch(carry, k):
      if cfg.shuffle:
        perm = jax.random.permutation(k, b)
        d = jax.tree.map(lambda x: jnp.take(x, perm, axis=0), data)
      else:
        d = data
      return scan(step_update, carry, jax.tree.map(lambda x: split(x, cfg.minibatches), d))

    carry = (
      state.policy,
      state.value,
      state.policy_opt,
      state.value_opt,
      state.policy_rest,
      state.value_rest,
    )
    carry, met = scan(epoch, carry, jax.random.split(key, cfg.epochs))
    met = jax.tree.map(jnp.mean, met)  # over epochs x minibatches
    met["loss"] = met["policy_loss"] - cfg.entropy_coef * met["entropy"]
    if cfg.kl_loss:
      met["loss"] = met["loss"] + state.kl_coef * met["kl_loss"]
    if not critic_free:
      met["loss"] = met["loss"] + cfg.value_coef * met["value_loss"]

    n_resp = jnp.maximum(jnp.sum(resp), 1.0)
    ref_kl = jnp.mean(jnp.sum(jnp.where(resp > 0, old_lp - ref_lp, 0.0), axis=1))
    kl_coef = state.kl_coef
    if cfg.adaptive_kl:
      kl_coef = adaptive_kl_coef(kl_coef, ref_kl, b, cfg.kl_target, cfg.kl_horizon)
    updates = state.step * cfg.epochs * cfg.minibatches
    met.update(
      {
        "mean_reward": jnp.mean(jnp.sum(rewards, axis=1)),
        "ref_kl": ref_kl,
        "kl_coef": state.kl_coef,
        "advantage_mean": masked_mean(adv, resp),
        "fgo_density": jnp.sum(loss_mask) / n_resp,
        "response_length": jnp.mean(jnp.sum(resp, axis=1)),
        "policy_lr": lr_schedule(cfg.policy_lr, cfg)(updates),
        "signal_fraction": signal_fraction(signal, units),
        "rows_trained": jnp.sum(jnp.sum(train_resp, axis=1) > 0),
      }
    )
    if cfg.filter_groups:
      met["groups_dropped"] = jnp.sum(units & ~signal)
    if cfg.critic_warmup > 0:
      met["policy_frozen"] = (state.step < cfg.critic_warmup).astype(jnp.float32)
    if not critic_free:
      met.update(
        {
          "explained_variance": explained_variance(old_v, ret, resp),
          "return_mean": masked_mean(ret, resp),
          "value_mean": masked_mean(old_v, resp),
          "value_lr": lr_schedule(cfg.value_lr, cfg)(updates),
        }
      )
    pparams, vparams, popt, vopt, _, _ = carry
    new = state.replace(
      policy=pparams,
      value=vparams,
      policy_opt=popt,
      value_opt=vopt,
      step=state.step + 1,
      kl_coef=jnp.asarray(kl_coef, jnp.float32),
    )
    return new, met

  jit_kwargs: dict[str, Any] = {"donate_argnums": (0,) if donate else ()}
  if in_shardings is not None:
    jit_kwargs["in_shardings"] = in_shardings
  if out_shardings is not None:
    jit_kwargs["out_shardings"] = out_shardings
  jitted = jax.jit(ppo_step, **jit_kwargs)
  unused = {"values" if critic_free else "group": None}

  @functools.wraps(ppo_step)
  def checked(state: TrainState, batch: Batch):
    check_batch(batch, cfg)
    return jitted(state, batch.replace(**unused))  # one pytree shape per config

  checked.jitted = jitted  # for .lower(), cost analysis and cache inspection
  return checked
