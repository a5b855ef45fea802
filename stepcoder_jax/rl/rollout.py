"""One rollout: `Rollout.collect(state, problems, rng) -> (ppo.Batch, RowResults)`.

It owns the whole way from chosen problems to a typed PPO batch: prompts at their CCCS stage
(`make_items`: question shortening, stages passed over; `pad_items`: zero-weight padding rows),
sampling with the current policy, the one cut (`completion.cut`), judging in the execution pool,
the device forward passes that run while the pool judges (reference log-probs, values unless
critic-free, and old log-probs unless the sampler's are used: `train.sampler_logprobs`), rewards,
FGO masks, group ids, and the all-gather of per-row verdicts so every process sees every row
(`RowResults`, in global row order).

Output vocabulary (`model.output_vocab`): the sampler, the old/reference scoring and the PPO loss
all take the policy's `output_head()`, so every log-prob (and the loss's entropy) is a softmax over
the same id subset. The sampler maps logit columns to ids of that subset, so a sampled token
outside it cannot occur; only a custom sampler returning forced ids could produce one, and its
log-prob would be OUTSIDE_VOCAB_LOGP in old, reference and new alike (ratio 1, no KL).

Scale-out: every process builds the same prompts (cheap host work), then samples, judges and
packs only its own block of rows (`Placement.rows`); the device functions are jitted with
explicit shardings over global arrays and every process calls them (multi-controller SPMD).
Overlap: the programs go to the pool (futures) before the forward passes are dispatched; JAX
dispatch is asynchronous, so the tests run while the accelerator computes.

The host helpers below (make_items, fill_responses, jobs, pack, rewards_and_masks) are plain
Python/numpy, so each step is testable without a model.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from typing import Any, Callable, Sequence

import jax
import numpy as np
from flax import nnx

from stepcoder_jax import completion
from stepcoder_jax.data import prompts as prompts_lib
from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError
from stepcoder_jax.execution.reward import OUTCOMES
from stepcoder_jax.rl import batching, fgo, ppo, spmd
from stepcoder_jax.rl.cccs import Curriculum
from stepcoder_jax.rl.config import FGOConfig, PPOConfig, TrainConfig

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class Item:
  """One sampled program: its prompt, tokens, text and (once judged) result."""

  problem: Problem
  stage: int
  prompt: prompts_lib.PromptParts
  prompt_ids: list[int]
  response_ids: list[int] = dataclasses.field(default_factory=list)
  completion: str = ""  # the text judged: response cut at a stop string
  offsets: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # per response token
  finish: str = ""  # completion.EOS | STOP | LENGTH (truncated)
  result: Any = None  # execution.ExecResult
  padding: bool = False  # a row only there to keep the batch divisible


@dataclasses.dataclass
class PromptReport:
  """How the prompts of one iteration were made to fit max_prompt_tokens.

  Attributes:
    skipped: problems with no prompt that fits, even the question alone at s* = 0.
    shortened: rows whose question was cut below `prompts.question_budget` to fit.
    stages_passed_over: CCCS stages passed over because their prefix left no room for the
      question (the problem moves to its next, shorter-prefix stage).
  """

  skipped: list[Problem] = dataclasses.field(default_factory=list)
  shortened: int = 0
  stages_passed_over: int = 0


def make_items(
  problems: Sequence[Problem],
  curriculum: Curriculum | None,
  tokenizer,
  style: str,
  max_prompt_tokens: int,
) -> tuple[list[Item], PromptReport]:
  """Prompts for `problems` (a problem repeated once per sample) at their current CCCS stage.

  A prompt over `max_prompt_tokens` gets a shorter question; when its stage prefix leaves too little
  room, the problem passes over that stage for good (`Curriculum.skip_stage`), so it is never
  stuck; only a problem whose prompt does not fit even at s* = 0 is left out.
  """
  items, report, built = [], PromptReport(), {}
  for p in problems:
    if p.id not in built:
      built[p.id] = _fit_at_stage(p, curriculum, tokenizer, style, max_prompt_tokens, report)
      if built[p.id] is None:
        report.skipped.append(p)
    fit = built[p.id]
    if fit is None:
      continue
    parts, ids, shortened = fit
    report.shortened += shortened
    stage = curriculum.stage(p) if curriculum is not None else 0
    items.append(Item(problem=p, stage=stage, prompt=parts, prompt_ids=list(ids)))
  if report.skipped:
    _log.warning(
      "%d problem(s) have no prompt within %d tokens, left out: %s",
      len(report.skipped),
      max_prompt_tokens,
      ", ".join(q.id for q in report.skipped[:5]),
    )
  return items, report


def _fit_at_stage(
  problem: Problem,
  curriculum: Curriculum | None,
  tokenizer,
  style: str,
  max_prompt_tokens: int,
  report: PromptReport,
):
  """`prompts.fit_prompt` at the problem's stage, passing over stages that cannot fit."""
  while True:
    prefix = curriculum.prefix(problem) if curriculum is not None else ""
    fit = prompts_lib.fit_prompt(problem, prefix, tokenizer, style, max_prompt_tokens)
    if fit is not None or curriculum is None or not curriculum.skip_stage(problem):
      return fit
    report.stages_passed_over += 1


def pad_items(items: list[Item], multiple: int) -> list[Item]:
  """`items` and padding rows up to a multiple of `multiple` (rare: only after skipped prompts).

  Padding rows are fresh copies of rows spread over the batch (not items[0] again and again),
  flagged `padding`: the trainer gives them zero loss weight and does not record their verdicts.
  """
  need = -len(items) % multiple
  sources = [items[k * len(items) // need] for k in range(need)]
  return items + [
    Item(
      problem=it.problem,
      stage=it.stage,
      prompt=it.prompt,
      prompt_ids=list(it.prompt_ids),
      padding=True,
    )
    for it in sources
  ]


def fill_responses(
  items: list[Item], responses: Sequence[Sequence[int]], tokenizer, eos_ids: Sequence[int]
) -> None:
  """Cut each sampled response the one way evaluation and `generate` cut theirs."""
  for it, r in zip(items, responses):
    c = completion.cut(
      tokenizer, r, it.prompt.stop, eos_ids, context=it.prompt.text, lead=it.prompt_ids[-1]
    )
    it.response_ids, it.completion, it.offsets, it.finish = c.ids, c.text, c.offsets, c.finish


def jobs(items: Sequence[Item]):
  from stepcoder_jax.execution.job import Job  # host-only import; no jax

  return [
    Job(problem=it.problem, completion=it.completion, prefix=it.prompt.code_prefix) for it in items
  ]


def pack(items: Sequence[Item], pad_id: int, prompt_len: int, response_len: int):
  """Token arrays of the batch (see batching.py for the layout)."""
  return batching.pack(
    [it.prompt_ids for it in items],
    [it.response_ids for it in items],
    pad_id=pad_id,
    prompt_len=prompt_len,
    response_len=response_len,
  )


def coverage_measured(result) -> bool:
  """Whether the judge measured line coverage of the run (`ExecResult.coverage_state`); results
  without that field count as measured unless the program did not compile."""
  state = getattr(result, "coverage_state", None)
  return state == "measured" if state is not None else result.outcome != "compile_error"


def rewards_and_masks(
  items: Sequence[Item], batch: dict[str, np.ndarray], prompt_len: int, fgo_enabled: bool
) -> dict[str, np.ndarray]:
  """Scalar rewards [B] and FGO masks [B, L] from the judged items."""
  rewards = np.array([it.result.reward for it in items], np.float32)
  masks = [
    fgo.token_mask(
      it.completion,
      it.offsets,
      it.result.executed_lines,
      it.result.executable_lines,
      it.result.outcome,
      enabled=fgo_enabled,
      coverage_measured=coverage_measured(it.result),
    )
    for it in items
  ]
  fgo_mask = batching.place_response_values(masks, batch["tokens"].shape[1], prompt_len, np.float32)
  return {"rewards": rewards, "fgo_mask": fgo_mask * batch["response_mask"]}


def group_ids(items: Sequence[Item]) -> np.ndarray:
  """[n] int32 group of each global row for critic-free advantages: the first row of its
  problem (each problem is repeated samples_per_problem times); a padding row is a group of its
  own, so its reward never enters a real group's statistics."""
  first: dict[str, int] = {}
  out = np.arange(len(items), dtype=np.int32)
  for i, item in enumerate(items):
    if not item.padding:
      out[i] = first.setdefault(item.problem.id, i)
  return out


def record_verdicts(curriculum: Curriculum, items: Sequence[Item], passed) -> None:
  """Each real row's verdict toward the stage its prompt was built at (padding rows: none),
  one group (a problem's rows at one stage) at a time, in row order (`Curriculum.record_group`)."""
  groups: dict[tuple[str, int], list[bool]] = {}
  for item, ok in zip(items, passed):
    if not item.padding:
      groups.setdefault((item.problem.id, item.stage), []).append(bool(ok))
  for (problem_id, stage), verdicts in groups.items():
    curriculum.record_group(problem_id, stage, verdicts)


def weightless_rows(items: Sequence[Item], mask_truncated: bool) -> list[int]:
  """Rows given no loss weight: padding, and with `ppo.mask_truncated` the completions that
  `max_new_tokens` cut short."""
  return [
    i
    for i, it in enumerate(items)
    if it.padding or (mask_truncated and it.finish == completion.LENGTH)
  ]


# ----------------------------------------------------------------------------- row results


@dataclasses.dataclass
class RowResults:
  """What every process knows about every row of one rollout (global row order).

  Attributes:
    items: the global rows (prompts and stages; judged fields only for this process's rows).
    rewards: [n] float32.
    outcomes: [n] int32 index into execution.reward.OUTCOMES (-1: other).
    response_len: [n] int32 response tokens.
    fgo_tokens, response_tokens: [n] float32 response tokens FGO keeps / in the packed batch.
    truncated: [n] bool, the response was cut by max_new_tokens.
    report: how the prompts were fitted into max_prompt_tokens.
    times: seconds spent sampling and waiting for the pool.
    prompt_len: the packed batch's prompt columns (`Rollout.prompt_columns`).
  """

  items: list[Item]
  rewards: np.ndarray
  outcomes: np.ndarray
  response_len: np.ndarray
  fgo_tokens: np.ndarray
  response_tokens: np.ndarray
  truncated: np.ndarray
  report: PromptReport
  times: dict[str, float] = dataclasses.field(default_factory=dict)
  prompt_len: int = 0  # the batch's prompt columns (where every response begins)

  @property
  def passed(self) -> np.ndarray:
    return self.outcomes == OUTCOMES.index("passed")

  @property
  def real(self) -> np.ndarray:
    return np.array([not it.padding for it in self.items], bool)

  def record(self, curriculum: Curriculum) -> int:
    """Record every row's verdict (`record_verdicts`); returns how many verdicts the curriculum
    ignored (their stage was already left)."""
    before = curriculum.ignored
    record_verdicts(curriculum, self.items, self.passed)
    return curriculum.ignored - before

  def pass_signal(self) -> float:
    """Share of the generated groups (the real rows of one problem) with a pass and a fail: the
    outcome signal. The reward is graded (a runtime error ranks above a compile error), so a
    group can carry an advantage with no pass in it; this counts only pass against fail."""
    groups: dict[str, list[bool]] = {}
    for it, ok in zip(self.items, self.passed):
      if not it.padding and it.problem is not None:  # rows built from a bare prompt form no group
        groups.setdefault(it.problem.id, []).append(bool(ok))
    mixed = [any(g) and not all(g) for g in groups.values()]
    return float(np.mean(mixed)) if mixed else 0.0

  def metrics(self) -> dict[str, float]:
    """Rollout metrics over the real rows (padding rows left out)."""
    real = self.real
    n = max(1, int(real.sum()))
    out = {
      "reward_mean": float(np.mean(self.rewards[real].astype(np.float64))) if real.any() else 0.0,
      "pass_rate": int(np.sum(self.passed[real])) / n,
      "pass_signal": self.pass_signal(),
      "response_tokens_mean": float(np.mean(self.response_len[real])) if real.any() else 0.0,
    }
    for k, o in enumerate(OUTCOMES):
      out[f"outcome/{o}"] = int(np.sum(self.outcomes[real] == k)) / n
    out["fgo_mask_density"] = float(
      self.fgo_tokens[real].sum() / max(1.0, float(self.response_tokens[real].sum()))
    )
    out.update(
      {
        "prompts_skipped": len(self.report.skipped),
        "truncated_rate": float(self.truncated[real].mean()) if real.any() else 0.0,
        "prompts_shortened": self.report.shortened,
        "cccs/stages_passed_over": self.report.stages_passed_over,
      }
    )
    out.update({f"time/{k}": v for k, v in self.times.items()})
    return out


def exchange_results(
  items: list[Item],
  mine: Sequence[Item],
  fgo_mask: np.ndarray,
  response_mask: np.ndarray,
  lo: int,
  hi: int,
  report: PromptReport | None = None,
) -> RowResults:
  """All-gather the judgements of this process's judged rows `mine` (global rows [lo, hi) of
  `items`), so every process holds every row's verdict."""
  n = len(items)
  floats = np.stack(
    [
      np.asarray([it.result.reward for it in mine], np.float32),
      np.asarray(fgo_mask, np.float32).sum(axis=1),
      np.asarray(response_mask, np.float32).sum(axis=1),
    ],
    axis=1,
  )
  ints = np.stack(
    [
      np.asarray(
        [OUTCOMES.index(it.result.outcome) if it.result.outcome in OUTCOMES else -1 for it in mine],
        np.int32,
      ),
      np.asarray([len(it.response_ids) for it in mine], np.int32),
      np.asarray([it.finish == completion.LENGTH for it in mine], np.int32),
    ],
    axis=1,
  )
  f = spmd.gather_rows(floats, lo, hi, n)
  i = spmd.gather_rows(ints, lo, hi, n)
  return RowResults(
    items=items,
    rewards=f[:, 0],
    outcomes=i[:, 0],
    response_len=i[:, 1],
    fgo_tokens=f[:, 1],
    response_tokens=f[:, 2],
    truncated=i[:, 2] > 0,
    report=report or PromptReport(),
  )


# ----------------------------------------------------------------------------- device functions


def place_sampled(sampled_logprobs: jax.Array, response_start: int, length: int) -> jax.Array:
  """The sampler's [B, N] per-token log-probs at the batch's response columns: [B, length].

  Column response_start + i gets the i-th drawn token's log-prob (batching.py's layout); the
  caller multiplies by the response mask, which also drops tokens a stop string cut off.
  """
  n = min(sampled_logprobs.shape[1], length - response_start)
  lp = sampled_logprobs[:, :n].astype(np.float32)
  return jax.numpy.pad(lp, ((0, 0), (response_start, length - response_start - n)))


def make_forward(
  policy_gd, value_gd, chunk: int, placement: spmd.Placement, response_start: int | None = None
):
  """`forward(state, ref_params, tokens, positions, attention_mask, response_mask,
  sampled_logprobs=None) -> dict` with old_logprobs, ref_logprobs (and values unless `value_gd`
  is None, critic-free), zero outside the response; global [B, T] arrays sharded by rows.

  `response_start`: the prompt bucket, where every response begins (the vocabulary projection
  runs from there on). `sampled_logprobs` ([B, N], the sampler's log-prob of each drawn token):
  when given, they are the old log-probs and the policy's scoring forward is skipped (the
  reference forward stays). That is exact because training samples at temperature 1 with no
  top-k/top-p (`TrainConfig.check_sampling`) from the same parameters, over the same output
  vocabulary; the sampler reaches its logits through the KV cache, so they differ from a full
  forward's by float rounding only (tests/test_sampler_logprobs.py measures it).
  """

  def scores(
    state: ppo.TrainState,
    ref_params,
    tokens,
    positions,
    attention_mask,
    response_mask,
    sampled_logprobs=None,
  ):
    ref = nnx.merge(policy_gd, ref_params, state.policy_rest)
    if sampled_logprobs is None:
      pol = nnx.merge(policy_gd, state.policy, state.policy_rest)
      old = ppo.policy_logprobs(
        pol,
        tokens,
        positions,
        attention_mask,
        chunk=chunk,
        with_entropy=False,
        response_start=response_start,
      )
    elif response_start is None:
      raise ValueError("make_forward: sampler log-probs need the response_start column")
    else:
      old = place_sampled(sampled_logprobs, response_start, tokens.shape[1])
    refl = ppo.policy_logprobs(
      ref,
      tokens,
      positions,
      attention_mask,
      chunk=chunk,
      with_entropy=False,
      response_start=response_start,
    )
    out = {"old_logprobs": old * response_mask, "ref_logprobs": refl * response_mask}
    if value_gd is not None:
      val = nnx.merge(value_gd, state.value, state.value_rest)
      out["values"] = ppo.value_estimates(val, tokens, positions, attention_mask) * response_mask
    return out

  b2 = placement.batch(2)
  shardings = (placement.state, placement.ref, b2, b2, b2, b2)
  scored = jax.jit(scores, in_shardings=shardings, out_shardings=b2)
  from_sampler = jax.jit(scores, in_shardings=shardings + (b2,), out_shardings=b2)

  def forward(
    state, ref_params, tokens, positions, attention_mask, response_mask, sampled_logprobs=None
  ):
    if sampled_logprobs is None:
      return scored(state, ref_params, tokens, positions, attention_mask, response_mask)
    return from_sampler(
      state, ref_params, tokens, positions, attention_mask, response_mask, sampled_logprobs
    )

  forward.jitted = {"scored": scored, "from_sampler": from_sampler}
  return forward


@dataclasses.dataclass
class Sampled:
  """What the rollout's sampler returns (a custom sampler may return the `ids` list alone).

  Attributes:
    ids: this process's rows, the drawn token ids of each (through EOS when drawn).
    logprobs: [B, N] float32 global array (all rows, sharded like the batch): the log-prob of
      each drawn token under the policy that drew it, 0 after a row's end.
  """

  ids: list[list[int]]
  logprobs: jax.Array


def make_sampler(
  policy_gd,
  max_new_tokens: int,
  eos_ids,
  pad_id: int,
  prompt_len: int,
  placement: spmd.Placement,
  group_size: int = 1,
):
  """`sample(state, prompt_ids, rng) -> Sampled` with the current policy params.

  Training samples from the plain policy (temperature 1, no top-k/top-p: the distribution PPO
  scores; `TrainConfig.check_sampling`). `prompt_ids` are this process's rows
  (`placement.rows`); the sampler runs on the global batch (every process calls it), so
  FSDP/tensor-sharded parameters work across hosts. Prompts are left-padded to the fixed
  `prompt_len` bucket, so the sampler compiles once (twice with `group_size`).

  `sample(..., prompt_len=P)` pads the prompts to P columns instead (the iteration's bucket,
  `Rollout.prompt_columns`): one compile per distinct P.

  `group_size` (`train.prefill_per_group`: the samples per problem): when the rows come in runs
  of that many identical prompts, the prefill runs once per run (`sampling.sample_fn`'s group).
  Only in a single process, where every row is in view (each process would otherwise have to
  agree on the check before the collective call).
  """
  from stepcoder_jax import sampling
  from stepcoder_jax.models.config import SamplingConfig

  scfg = SamplingConfig(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens)
  eos_ids = tuple(int(e) for e in eos_ids)

  def run(params, rest, tokens, mask, rng, n, temp, p, group=1):
    gd, st = nnx.split(nnx.merge(policy_gd, params, rest))
    fn = sampling.sample_fn(gd, scfg, eos_ids, pad_id, group)
    return fn(st, tokens, mask, rng, n, temp, p)

  b2, rep = placement.batch(2), placement.replicated
  by_group = {
    g: jax.jit(
      functools.partial(run, group=g),
      in_shardings=(placement.state.policy, placement.state.policy_rest, b2, b2) + (rep,) * 4,
      out_shardings=placement.batch(1),
    )  # a prefix: every output is [B, ...]
    for g in {1, max(1, group_size)}
  }
  jitted = by_group[1]
  shared_prefill = group_size > 1 and jax.process_count() == 1
  settings = (
    np.asarray(max_new_tokens, np.int32),
    np.asarray(1.0, np.float32),
    np.asarray(1.0, np.float32),
  )
  # The settings are jit operands, made into arrays at the first call only: building the
  # sampler touches no device, so it can be lowered for a topology that is not here (compile/).
  knobs: list = []

  def sample(state: ppo.TrainState, prompt_ids, rng, prompt_len: int = prompt_len):
    if not knobs:
      knobs.extend(spmd.to_global(settings, (rep, rep, rep)))
    tokens, mask = sampling.pad_prompts(prompt_ids, pad_id, length=prompt_len)
    n = placement.global_rows(len(prompt_ids))
    lo, hi = placement.rows(n)
    g = spmd.from_local_rows({"tokens": tokens, "mask": mask}, placement, n)
    group = 1
    if shared_prefill and n == len(prompt_ids):
      group = sampling.prompt_group(prompt_ids, group_size)
    out = by_group[group](
      state.policy, state.policy_rest, g["tokens"], g["mask"], spmd.to_global(rng, rep), *knobs
    )
    toks = spmd.local_rows(out.tokens, lo, hi)
    lens = spmd.local_rows(out.lengths, lo, hi)
    return Sampled(
      ids=[[int(t) for t in toks[i, : int(lens[i])]] for i in range(len(prompt_ids))],
      logprobs=out.logprobs,
    )

  sample.jitted = jitted
  sample.settings = settings  # (max_new_tokens, temperature, top_p): the knob operands' values
  return sample


# ----------------------------------------------------------------------------- the rollout


class Rollout:
  """Everything one rollout needs, built once per run; `collect` runs one.

  Args:
    policy_gd, value_gd: graph definitions of the policy and the value model (None critic-free).
    placement: where the state and the batches live (spmd.make_placement).
    ref_params: the frozen reference policy's parameters, placed by `placement.ref`.
    tokenizer, eos_ids, pad_id: from `sampling.special_ids` (the same as eval and generate).
    curriculum: the CCCS state prompts are built from (the caller records verdicts into it).
    pool: an ExecutionPool judging this process's rows.
    cfg, ppo_cfg, fgo_cfg: the run's configs.
    sampler: `sample(state, prompt_ids, rng) -> Sampled` (or token id lists alone: then the old
      log-probs come from a scoring forward) for this process's rows (a collective on the mesh:
      every process calls it); default: the policy (`make_sampler`).
  """

  def __init__(
    self,
    policy_gd,
    value_gd,
    placement: spmd.Placement,
    ref_params,
    tokenizer,
    eos_ids,
    pad_id: int,
    curriculum: Curriculum,
    pool,
    cfg: TrainConfig,
    ppo_cfg: PPOConfig,
    fgo_cfg: FGOConfig,
    sampler=None,
  ):
    self.placement, self.ref_params = placement, ref_params
    self.tok, self.eos_ids, self.pad_id = tokenizer, tuple(eos_ids), pad_id
    self.curriculum, self.pool = curriculum, pool
    self.cfg, self.ppo_cfg, self.fgo_cfg = cfg, ppo_cfg, fgo_cfg
    # Prompts are fitted into cfg.max_prompt_tokens as evaluation and SFT fit theirs; the arrays
    # have at most a power-of-two bucket of it (`prompt_len`, what compile/ plans for) prompt
    # columns, and each iteration the fewest that `prompt_columns` allows.
    self.prompt_len = batching.bucket(cfg.max_prompt_tokens)
    self.response_len = batching.bucket(cfg.max_new_tokens)
    self._forwards: dict[int, Callable] = {}
    self._make_forward = functools.partial(
      make_forward, policy_gd, value_gd, cfg.logprob_chunk, placement
    )
    self.forward = self.forward_for(self.prompt_len)
    self.custom_sampler = sampler is not None
    self.sampler = sampler or make_sampler(
      policy_gd,
      cfg.max_new_tokens,
      self.eos_ids,
      pad_id,
      self.prompt_len,
      placement,
      group_size=cfg.samples_per_problem if cfg.prefill_per_group else 1,
    )
    # Padding keeps the global batch divisible by the minibatch split and the batch devices.
    self.row_multiple = math.lcm(
      max(1, ppo_cfg.minibatches * ppo_cfg.grad_accum), placement.row_divisor
    )

  def forward_for(self, prompt_len: int) -> Callable:
    """The scoring forward of batches with `prompt_len` prompt columns (compiled once each)."""
    if prompt_len not in self._forwards:
      self._forwards[prompt_len] = self._make_forward(response_start=prompt_len)
    return self._forwards[prompt_len]

  def prompt_columns(self, items: Sequence[Item], fixed: bool = False) -> int:
    """The prompt columns of a batch of `items`: their longest prompt rounded up to a multiple
    of `train.prompt_bucket` (so a batch of short prompts is not padded to the limit's bucket:
    the sampler's prefill and every forward and backward over the batch scale with it), at
    most `prompt_len`. `prompt_len` itself with `fixed`, `train.prompt_bucket = 0` or a custom
    sampler (its own padding)."""
    step = self.cfg.prompt_bucket
    if fixed or step <= 0 or self.custom_sampler:
      return self.prompt_len
    longest = max(len(it.prompt_ids) for it in items)
    return min(self.prompt_len, -(-longest // step) * step)

  def items(self, problems: Sequence[Problem]) -> tuple[list[Item], PromptReport]:
    """The global rows: each problem samples_per_problem times at its stage, padded."""
    rows = [p for p in problems for _ in range(self.cfg.samples_per_problem)]
    items, report = make_items(
      rows, self.curriculum, self.tok, self.cfg.prompt_style, self.cfg.max_prompt_tokens
    )
    if not items:
      raise UserError(
        f"train: every prompt of this iteration is longer than "
        f"prompt.max_tokens={self.cfg.max_prompt_tokens}"
      )
    return pad_items(items, self.row_multiple), report

  def collect(
    self,
    state: ppo.TrainState,
    problems: Sequence[Problem],
    rng: jax.Array,
    fixed_columns: bool = False,
  ) -> tuple[ppo.Batch, RowResults]:
    """Sample, judge and score one rollout of `problems` with the policy in `state`.
    `fixed_columns`: prompt_len prompt columns whatever the prompts (batches to be merged)."""
    t0 = time.time()
    items, report = self.items(problems)
    n = len(items)
    lo, hi = self.placement.rows(n)
    mine = items[lo:hi]
    p = self.prompt_columns(items, fixed_columns)  # every process sees every row: one p
    ids = [i.prompt_ids for i in mine]
    if self.custom_sampler:
      sampled = self.sampler(state, ids, rng)
    else:
      sampled = self.sampler(state, ids, rng, prompt_len=p)
    sampled_lp = None
    if isinstance(sampled, Sampled):
      sampled, sampled_lp = sampled.ids, sampled.logprobs
    if not self.cfg.sampler_logprobs:
      sampled_lp = None  # score the old policy with its own forward pass (for comparison)
    fill_responses(mine, sampled, self.tok, self.eos_ids)
    t_sample = time.time()
    future = self.pool.submit(jobs(mine))
    arrays = pack(mine, self.pad_id, p, self.response_len)
    arrays["response_mask"] = arrays["response_mask"].astype(np.float32)
    arrays["response_mask"][weightless_rows(mine, self.ppo_cfg.mask_truncated)] = 0  # no weight
    dev = spmd.from_local_rows(arrays, self.placement, n)
    scored = self.forward_for(p)(
      state,
      self.ref_params,
      dev["tokens"],
      dev["positions"],
      dev["attention_mask"],
      dev["response_mask"],
      sampled_lp,
    )
    # (dispatched asynchronously: the device computes while the pool judges)
    for item, res in zip(mine, future.result()):
      item.result = res
    t_judge = time.time()
    rm = rewards_and_masks(mine, arrays, p, self.fgo_cfg.enabled)
    judged = {"fgo_mask": rm["fgo_mask"], "rewards": rm["rewards"]}
    if self.ppo_cfg.critic_free:
      judged["group"] = group_ids(items)[lo:hi]
    batch = ppo.Batch(**dev, **scored, **spmd.from_local_rows(judged, self.placement, n))
    rows = exchange_results(items, mine, rm["fgo_mask"], arrays["response_mask"], lo, hi, report)
    rows.times = {"sample_s": t_sample - t0, "judge_wait_s": t_judge - t_sample}
    rows.prompt_len = p
    return batch, rows
