"""Light gin-configurable dataclasses (no jax import)."""

import dataclasses

import gin


@gin.configurable('cccs')
@dataclasses.dataclass
class CCCSConfig:
  """Curriculum of Code Completion Subtasks (see stepcoder_jax/rl/cccs.py).

  Attributes:
    enabled: False gives plain RL (every problem at s* = 0: question alone), for ablations. It is
      the only thing CCCS changes: the problems drawn are the same either way.
    rho: a stage is passed when its accumulated pass rate strictly exceeds rho.
    min_attempts: attempts needed on a stage before its pass rate is trusted.
    statements: which statements start subtasks: 'if' (if/elif: the paper's "conditional
      statements") or 'branching' (also for, while, try, match, with).
    schedule: 'paper' (the paper's rule: a problem only moves earlier, to a longer tail, when
      its pass rate on the current stage exceeds rho) or 'adaptive' (also moves it one stage
      later, back toward the shorter tail, whenever every sample of its group in one rollout
      failed there, so each problem is trained where it has some signal; in the spirit of
      BREAD's and SEELE's per-problem partial-solution hints).
  """

  enabled: bool = True
  rho: float = 0.5
  min_attempts: int = 4
  statements: str = 'if'
  schedule: str = 'paper'

  def __post_init__(self):
    from stepcoder_jax.errors import UserError

    if not 0.0 <= self.rho < 1.0:
      raise UserError(f"gin cccs.rho: {self.rho} is not in [0, 1) (a pass rate must exceed it)")
    if self.min_attempts < 1:
      raise UserError(f"gin cccs.min_attempts: {self.min_attempts} must be >= 1")
    if self.statements not in ('if', 'branching'):
      raise UserError(f"gin cccs.statements: {self.statements!r} is not 'if' or 'branching'")
    if self.schedule not in ('paper', 'adaptive'):
      raise UserError(f"gin cccs.schedule: {self.schedule!r} is not 'paper' or 'adaptive'")


@gin.configurable('fgo')
@dataclasses.dataclass
class FGOConfig:
  """Fine-Grained Optimization: mask the tokens of unexecuted lines out of the policy loss.

  Attributes:
    enabled: False gives a mask of ones (the same compiled PPO step, for ablations).
  """

  enabled: bool = True


# ppo.loss_agg values, named as veRL's loss_agg_mode.
LOSS_AGG = ('token-mean', 'seq-mean-token-mean')


@gin.configurable('ppo')
@dataclasses.dataclass
class PPOConfig:
  """PPO hyper-parameters (see stepcoder_jax/rl/ppo.py).

  Attributes:
    gamma, lam: GAE discount and lambda over response tokens.
    clip_eps: policy ratio clip; a token is clipped only when the ratio is strictly outside
      [1 - clip_eps, 1 + clip_eps] in the direction that would increase the objective.
    value_clip: clip of the new value around the rollout value (<= 0 disables).
    value_coef: weight of the value loss in the reported total 'loss' metric (the value model
      has its own optimizer, so it does not scale any gradient).
    kl_coef: initial per-token KL penalty coefficient against the reference policy.
    adaptive_kl: adapt kl_coef towards kl_target (Ziegler et al. 2019) over kl_horizon sequences.
    entropy_coef: entropy bonus weight (0 disables).
    whiten_advantages: normalise advantages over the response tokens of the rollout batch.
    whiten_min_std: divide by at least this (rewards differ by 0.3 or more between outcomes, so
      a smaller spread means every program got the same outcome: don't amplify it).
    epochs, minibatches, grad_accum: each step runs epochs x minibatches optimizer updates;
      each minibatch is split into grad_accum micro-batches whose gradients are summed.
    shuffle: permute the rollout rows every epoch.
    policy_lr, value_lr: peak learning rates.
    lr_schedule: 'constant' or 'cosine' (to 10% of peak at decay_steps), after linear warmup.
    warmup_steps, decay_steps: in optimizer updates.
    max_grad_norm, value_max_grad_norm: global-norm clipping (<= 0 disables).
    weight_decay, adam_b1, adam_b2, adam_eps: AdamW settings (shared).
    logprob_chunk: sequence chunk of the chunked log-prob computation.
    seed: the minibatch shuffling key (folded with the step number).
    train_embeddings: False freezes the token embedding (and a tied output matrix) of both
      models: a memory saving for large vocabularies on small machines (the CPU demo).
    advantage: 'gae' (the paper: value model + GAE), or a critic-free estimator over the
      train.samples_per_problem samples of a prompt: 'grpo' (reward minus the group mean,
      divided by the group std) or 'rloo' (reward minus the mean of the group's other samples).
      Critic-free runs build no value model at all.
    grpo_scale_std: False gives GRPO without the division by the group std.
    grpo_min_std: GRPO divides by at least this (a group whose programs all got the same
      outcome differs only by the small KL term: don't amplify it to unit size).
    kl_in_loss: where the KL to the reference goes. True: into the loss, kl_coef x the k3
      estimator of KL(new || ref) per token (TRL GRPO's `beta`; veRL's `use_kl_loss` with
      `kl_loss_type=low_var_kl`); False: into the reward, per token (TRL PPO, veRL's
      `use_kl_in_reward`). None (default): the loss for the critic-free estimators (as GRPO
      does), the reward for 'gae' (the paper).
    loss_agg: how the policy loss (and entropy, KL-in-loss) terms of a minibatch are averaged;
      veRL's `loss_agg_mode`: 'token-mean' (every response token weighs the same: DAPO, TRL's
      `loss_type='dapo'`/'bnpo') or 'seq-mean-token-mean' (the mean over each sequence's tokens,
      then over sequences: the original GRPO, TRL's `loss_type='grpo'`).
    clip_eps_high: the upper policy-ratio clip, 1 + clip_eps_high for positive advantages
      (DAPO's clip-higher: veRL `clip_ratio_high`, TRL `epsilon_high`); None: clip_eps.
    mask_truncated: completions cut by train.max_new_tokens get no loss weight at all (TRL's
      `mask_truncated_completions`, DAPO's overlong filtering); their rewards still enter their
      group's statistics.
    critic_warmup: the first N PPO steps update the value model only (veRL's
      `trainer.critic_warmup`); 'gae' only.
    filter_groups: dynamic sampling for 'grpo'/'rloo' (veRL `algorithm.filter_groups`, DAPO,
      OpenRLHF `--dynamic_filtering`): a group whose outcome rewards are all equal carries no
      advantage and is dropped from the update (its rows get no loss weight, shapes unchanged).
    max_refill_rounds: with filter_groups, up to this many extra generation rounds per
      iteration on further problems; their groups with signal take the dropped groups' rows
      (veRL's `max_num_gen_batches`). 0: drop only.
  """

  gamma: float = 1.0
  lam: float = 0.95
  clip_eps: float = 0.2
  value_clip: float = 0.2
  value_coef: float = 0.5
  kl_coef: float = 0.05
  adaptive_kl: bool = False
  kl_target: float = 6.0  # adaptive_kl: the KL (nats per response) aimed at
  kl_horizon: float = 10000.0  # adaptive_kl: sequences over which kl_coef adapts
  entropy_coef: float = 0.0
  whiten_advantages: bool = True
  whiten_min_std: float = 0.1
  epochs: int = 1
  minibatches: int = 1
  grad_accum: int = 1
  shuffle: bool = True
  policy_lr: float = 1e-6
  value_lr: float = 5e-6
  lr_schedule: str = 'constant'
  warmup_steps: int = 0
  decay_steps: int = 10000
  max_grad_norm: float = 1.0
  value_max_grad_norm: float = 1.0
  weight_decay: float = 0.0
  adam_b1: float = 0.9
  adam_b2: float = 0.95
  adam_eps: float = 1e-8
  logprob_chunk: int = 128
  seed: int = 0
  train_embeddings: bool = True
  advantage: str = 'gae'
  grpo_scale_std: bool = True
  grpo_min_std: float = 0.1
  kl_in_loss: bool | None = None
  loss_agg: str = 'token-mean'
  clip_eps_high: float | None = None
  mask_truncated: bool = False
  critic_warmup: int = 0
  filter_groups: bool = False
  max_refill_rounds: int = 0

  @property
  def critic_free(self) -> bool:
    """No value model: advantages come from the samples of the same prompt."""
    return self.advantage != 'gae'

  @property
  def kl_loss(self) -> bool:
    """The KL to the reference is a loss term (else a per-token reward penalty)."""
    return self.critic_free if self.kl_in_loss is None else bool(self.kl_in_loss)

  @property
  def clip_high(self) -> float:
    """The upper ratio clip (clip_eps_high, else clip_eps)."""
    return self.clip_eps if self.clip_eps_high is None else self.clip_eps_high

  def __post_init__(self):
    from stepcoder_jax.errors import UserError

    def bad(field, why):
      raise UserError(f"gin ppo.{field}: {getattr(self, field)!r} {why}")

    for f in ("epochs", "minibatches", "grad_accum", "logprob_chunk"):
      if int(getattr(self, f)) < 1:
        bad(f, "must be >= 1")
    for f in ("gamma", "lam"):
      if not 0.0 <= getattr(self, f) <= 1.0:
        bad(f, "must be in [0, 1]")
    if self.clip_eps <= 0:
      bad("clip_eps", "must be > 0")
    if self.lr_schedule not in ("constant", "cosine"):
      bad("lr_schedule", "is not 'constant' or 'cosine'")
    if self.adaptive_kl and (self.kl_target <= 0 or self.kl_horizon <= 0):
      bad("kl_target", "and ppo.kl_horizon must be > 0 with ppo.adaptive_kl")
    if self.advantage not in ('gae', 'grpo', 'rloo'):
      bad("advantage", "is not 'gae', 'grpo' or 'rloo'")
    if self.grpo_min_std <= 0:
      bad("grpo_min_std", "must be > 0 (it floors a divisor)")
    if self.loss_agg not in LOSS_AGG:
      bad("loss_agg", f"is not one of {', '.join(map(repr, LOSS_AGG))}")
    if self.clip_eps_high is not None and self.clip_eps_high <= 0:
      bad("clip_eps_high", "must be > 0")
    for f in ("critic_warmup", "max_refill_rounds"):
      if getattr(self, f) < 0:
        bad(f, "must be >= 0")


# The prompt limit is gin's `prompt.max_tokens` (data/config.py), shared with evaluation and SFT;
# `max_prompt_tokens` is set from it (or by a Python caller), never by its own gin binding.
@gin.configurable('train', denylist=['max_prompt_tokens'])
@dataclasses.dataclass
class TrainConfig:
  """One StepCoder run: rollouts of `problems_per_iteration` x `samples_per_problem` per step."""

  work_dir: str = "runs/stepcoder"  # outputs, checkpoints; a rerun resumes from them
  seed: int = 0  # problem order, sampling and initialization
  num_iterations: int = 20  # PPO iterations (one rollout + update each)
  problems_per_iteration: int = 8  # problems drawn per iteration
  samples_per_problem: int = 1  # samples per problem (a group, for GRPO/RLOO)
  # None: prompt.max_tokens (prompts <= it; arrays padded to a power-of-two bucket)
  max_prompt_tokens: int | None = None
  max_new_tokens: int = 128  # longest response sampled
  temperature: float = 1.0  # must stay 1 (PPO scores the unmodified policy)
  top_p: float = 1.0  # must stay 1
  top_k: int = 0  # must stay 0
  prompt_style: str = "plain"  # "plain" | "chat"
  eval_every: int = 0  # evaluate every N iterations and at the end (0: never)
  logprob_chunk: int = 128  # sequence chunk for log-probs (never [B, T, V] f32)
  # Old log-probs from the sampler (its log-prob of each drawn token) instead of a scoring forward
  # of the policy; exact at the only training settings (temperature 1, no top-k/top-p). False
  # keeps the separate forward (for comparison).
  sampler_logprobs: bool = True
  # The sampler's prefill once per problem, its cache shared by the problem's samples (a GRPO
  # group has samples_per_problem rows with one prompt); the draws are unchanged. False: every row
  # prefilled (for comparison).
  prefill_per_group: bool = True
  # Each batch's prompt columns: its longest prompt rounded up to a multiple of this (at most the
  # max_prompt_tokens bucket), so short prompts are not padded to the limit (the sampler, scoring
  # and the update all scale with it; one compile per distinct width). 0: always the limit's
  # bucket (one compile). Dynamic sampling's merged rounds use the limit's bucket.
  prompt_bucket: int = 32

  def __post_init__(self):
    from stepcoder_jax.data.config import prompt_limit

    self.max_prompt_tokens = prompt_limit(self.max_prompt_tokens)

  def check_sampling(self) -> None:
    """Reject sampling knobs that PPO's scoring does not apply.

    Old, reference and new log-probs are scored under the model itself (temperature 1, no
    top-k/top-p). Sampling from another distribution would make PPO's ratio and KL compare
    different policies, so training samples at temperature 1 (evaluation may use any). Called by
    the trainer (not in __post_init__, where gin would add lines to the one-line error).
    """
    from stepcoder_jax.errors import UserError

    for name, value, plain in (
      ("temperature", self.temperature, 1.0),
      ("top_p", self.top_p, 1.0),
      ("top_k", self.top_k, 0),
    ):
      if value != plain:
        raise UserError(
          f"gin train.{name}: {value!r} is not supported (training samples at "
          f"train.{name} = {plain!r}: PPO scores log-probs under the unmodified "
          f"policy; use eval.{name} for evaluation)"
        )
