"""Supervised fine-tuning on canonical solutions: the paper's SFT baseline and the frozen
reference policy that PPO's KL penalty is measured against.

One example per problem and CCCS stage: the prompt is exactly what RL shows the model at that
stage (`prompts.fit_prompt(problem, <the stage prefix>, ...)` within `prompt.max_tokens`, the
question cut as in RL; the prefix from the same `Curriculum`
the trainer uses, so the prompt/target token boundary is the RL one: a line start), and the
target is the rest of the canonical solution followed by the closing code fence, so the model also
learns where to stop (the sampler's stop string). The last stage, s* = 0, is the question plus the
starter code, as in evaluation. Without stage examples (`sft.cccs_stages = False`) only that one
is built; a model trained on full solutions alone has never continued a prompt that ends at a line
start inside the code, which is what every CCCS prompt asks of it. Prompt and target are
tokenized separately, as the sampler sees them (prompt ids, then generated ids), and packed with
`batching.pack`; the loss is
the mean negative log-likelihood over the target tokens only (`response_mask`), computed with
PPO's `policy_logprobs`, so SFT, PPO and evaluation share one layout and one log-prob function.

Convergence: with validation problems (`sft --val_problems FILE`), their examples (built by the
same rule) are scored every `sft.eval_every` steps; `sft.steps` is a maximum, `sft.patience`
evaluations without improvement stop the run, and the best evaluation's parameters are the ones
saved. The batches walk through shuffled epochs of the training examples (`batch_order`), a new
permutation per epoch. `sft_summary.json` says `finished: true` only once the model is written,
so a driver can skip a finished run; each new best is written to the output directory at once
(`finished: false`).

Resume: with an output directory, the loop's state is checkpointed every `sft.save_every` steps
and at each new best (`runs/sft_checkpoint.py`); a rerun with the same settings continues from
the last checkpoint and ends with the same parameters as a run that was never killed. The
checkpoints are deleted once the run has finished.

`sft_step(params, opt_state, batch)` is pure and jitted; the loop around it (shuffling, metrics,
saving) is plain host code. Shapes are fixed for the whole run (buckets over all examples), so the
step compiles once.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stepcoder_jax import completion
from stepcoder_jax.config import MeshConfig
from stepcoder_jax.data import prompts as prompts_lib
from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError
from stepcoder_jax.rl import batching
from stepcoder_jax.rl.cccs import Curriculum
from stepcoder_jax.rl.config import CCCSConfig
from stepcoder_jax.rl.ppo import policy_logprobs
from stepcoder_jax.runs.config import SFTConfig

_log = logging.getLogger(__name__)

CLOSING_FENCE = "```"
SKIP_REASONS = (
  "no_solution",
  "prompt_too_long",
  "prefix_mismatch",
  "too_long",
  "outside_output_vocab",
)


@dataclasses.dataclass
class SFTExample:
  """One (prompt, target) pair in token ids; the target is the only thing trained on."""

  problem_id: str
  prompt_ids: list[int]
  target_ids: list[int]
  target_text: str


def target_text(solution: str, code_prefix: str) -> str | None:
  """The solution after the code prefix, then the closing fence; None if it does not extend it.

  The fence goes on its own line, so the text contains the stop string "\\n```" exactly once, at
  its end: the sampler stops there and the judged program is the solution itself.
  """
  if not solution.strip() or not solution.startswith(code_prefix):
    return None
  rest = solution[len(code_prefix) :]
  return rest + (CLOSING_FENCE if rest.endswith("\n") else "\n" + CLOSING_FENCE)


def stage_prefixes(problem: Problem, statements: str | None) -> list[str]:
  """The CCCS prefixes of `problem` in training order ('' last: s* = 0); [''] without stages."""
  if statements is None:
    return [""]
  cur = Curriculum(CCCSConfig(statements=statements))
  return [cur.prefix_at(problem, k) for k in range(cur.register(problem).num_stages)]


def build_examples(
  problems: Sequence[Problem],
  tokenizer,
  *,
  style: str = "plain",
  max_len: int = 512,
  max_prompt_tokens: int | None = None,
  statements: str | None = None,
  output_vocab: Collection[int] | None = None,
) -> tuple[list[SFTExample], dict[str, list[str]]]:
  """SFT examples of `problems` and the ids skipped, by reason.

  `statements` ('if' or 'branching', as `cccs.statements`) adds an example per CCCS stage before
  the s* = 0 one; None builds the s* = 0 example only. `max_prompt_tokens` (SFTConfig's, i.e.
  prompt.max_tokens): each prompt is fitted into it by `prompts.fit_prompt`, so it is exactly the
  prompt training and evaluation build for that problem and stage; None: the question is never
  cut. Reasons: 'no_solution' (empty canonical solution), 'prompt_too_long' (no prompt within
  `max_prompt_tokens`), 'prefix_mismatch' (the solution does not start with the prompt's code
  prefix, e.g. a starter code the solution rewrote), 'too_long' (prompt + target > max_len
  tokens; a stage example is named 'ID@K', K its stage in training order),
  'outside_output_vocab' (a target id the policy cannot emit under `output_vocab`, the model's
  restricted output vocabulary).
  """
  allowed = frozenset(output_vocab) if output_vocab is not None else None
  examples: list[SFTExample] = []
  skipped: dict[str, list[str]] = {r: [] for r in SKIP_REASONS}
  for p in problems:
    if not p.canonical_solution.strip():
      skipped["no_solution"].append(p.id)
      continue
    prefixes = stage_prefixes(p, statements)
    for k, prefix in enumerate(prefixes):
      name = p.id if k == len(prefixes) - 1 else f"{p.id}@{k}"
      if max_prompt_tokens is None:
        parts = prompts_lib.build_prompt(p, tokenizer, prefix=prefix, style=style)
        prompt_ids = completion.encode_prompt(tokenizer, parts)  # as training and eval encode it
      else:
        fit = prompts_lib.fit_prompt(p, prefix, tokenizer, style, max_prompt_tokens)
        if fit is None:
          skipped["prompt_too_long"].append(name)
          continue
        parts, prompt_ids, _ = fit
      text = target_text(p.canonical_solution, parts.code_prefix)
      if text is None:
        skipped["prefix_mismatch"].append(name)
        continue
      target_ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
      if len(prompt_ids) + len(target_ids) > max_len:
        skipped["too_long"].append(name)
        continue
      if allowed is not None and not allowed.issuperset(target_ids):
        skipped["outside_output_vocab"].append(name)
        continue
      examples.append(SFTExample(p.id, prompt_ids, target_ids, text))
  for reason, ids in skipped.items():
    if ids:
      _log.warning("sft: %d problem(s) skipped (%s): %s", len(ids), reason, ", ".join(ids[:5]))
  return examples, skipped


def pack_examples(
  examples: Sequence[SFTExample], pad_id: int, prompt_len: int, response_len: int
) -> dict[str, np.ndarray]:
  return batching.pack(
    [e.prompt_ids for e in examples],
    [e.target_ids for e in examples],
    pad_id=pad_id,
    prompt_len=prompt_len,
    response_len=response_len,
  )


def example_shapes(examples: Sequence[SFTExample], multiple: int = 16) -> tuple[int, int]:
  """(prompt_len, response_len) covering every example, rounded up to `multiple`.

  Shapes are fixed for the whole run (one compile), so they need not be powers of two; the
  tighter fit matters on CPU, where every padded column costs a full forward and backward.
  """

  def up(n: int) -> int:
    return -(-max(1, n) // multiple) * multiple

  return (
    up(max(len(e.prompt_ids) for e in examples)),
    up(max(len(e.target_ids) for e in examples)),
  )


# ----------------------------------------------------------------------------- device side


def nll(
  model, batch: dict[str, jax.Array], chunk: int, prompt_len: int | None = None
) -> tuple[jax.Array, jax.Array]:
  """(mean NLL per target token, target token count) of a packed batch under `model`.

  `prompt_len` (static): the prompt bucket, where every row's target starts; the output
  projection then runs over the target columns only.
  """
  # Under model.output_vocab the softmax runs over the subset, as the policy samples and PPO
  # scores: SFT then fits the distribution RL starts from, and the output projection costs
  # |subset| / V of the full one (Gemma 3: 13%; most of a 270M model's FLOPs are that projection).
  # build_examples drops the examples whose targets leave the subset.
  logp = policy_logprobs(
    model,
    batch["tokens"],
    batch["positions"],
    batch["attention_mask"],
    chunk=chunk,
    with_entropy=False,
    response_start=prompt_len,
  )
  mask = batch["response_mask"].astype(jnp.float32)
  count = jnp.sum(mask)
  return -jnp.sum(logp * mask) / jnp.maximum(count, 1.0), count


def make_optimizer(cfg: SFTConfig) -> optax.GradientTransformation:
  """AdamW with linear warmup then a constant rate, after global-norm clipping."""
  sched = optax.constant_schedule(cfg.learning_rate)
  if cfg.warmup_steps > 0:
    sched = optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps), sched], [cfg.warmup_steps]
    )
  parts = [optax.clip_by_global_norm(cfg.max_grad_norm)] if cfg.max_grad_norm > 0 else []
  parts.append(optax.adamw(sched, weight_decay=cfg.weight_decay))
  return optax.chain(*parts)


@dataclasses.dataclass(frozen=True)
class SFTShardings:
  """Where SFT's arrays live on the mesh: the PPO step's mesh and logical-axis rules
  (`sft_shardings`), so a model that trains under PPO on a slice also fine-tunes there."""

  params: Any
  opt_state: Any
  rest: Any
  batch: Any  # one sharding for every [B, T] batch array (rows over the batch axes)
  replicated: Any


def sft_shardings(mesh, rules, params, opt_state, rest) -> SFTShardings:
  """Shardings of SFT's state (concrete or abstract) by the models' logical axes, as the PPO
  state's (`spmd.make_placement`): parameters by their axes, Adam moments like their
  parameter, batch rows split over the batch mesh axes."""
  from stepcoder_jax import sharding

  p_sh = sharding.state_shardings(params, mesh, rules)
  return SFTShardings(
    params=p_sh,
    opt_state=sharding.opt_state_shardings(opt_state, params, p_sh, mesh),
    rest=sharding.state_shardings(rest, mesh, rules),
    batch=sharding.batch_sharding(mesh, rules, 2),
    replicated=sharding.replicated(mesh),
  )


def make_sft_step(
  graphdef,
  rest,
  tx: optax.GradientTransformation,
  chunk: int,
  prompt_len: int | None = None,
  shardings: SFTShardings | None = None,
) -> Callable[[Any, Any, dict], tuple[Any, Any, dict]]:
  """The jitted pure `sft_step(params, opt_state, batch) -> (params, opt_state, metrics)`.

  `shardings`: the state's and the batch's placement (`sft_shardings`); None lets jit follow
  its arguments. `sft_step.jitted(params, opt_state, rest, batch)` is the program itself (the
  frozen rest is an operand, so it lowers from abstract arguments too).
  """

  def loss_fn(params, rest, batch):
    return nll(nnx.merge(graphdef, params, rest), batch, chunk, prompt_len)

  def step(params, opt_state, rest, batch):
    (loss, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest, batch)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (
      params,
      opt_state,
      {"loss": loss, "target_tokens": count, "grad_norm": optax.tree.norm(grads)},
    )

  kw = {}
  if shardings is not None:
    s = shardings
    kw = {
      "in_shardings": (s.params, s.opt_state, s.rest, s.batch),
      "out_shardings": (s.params, s.opt_state, s.replicated),
    }
  jitted = jax.jit(step, donate_argnums=(0, 1), **kw)

  def sft_step(params, opt_state, batch):
    return jitted(params, opt_state, rest, batch)

  sft_step.jitted = jitted
  return sft_step


def make_eval_nll(graphdef, rest, chunk: int, prompt_len: int | None = None):
  """Jitted `(params, batch) -> mean NLL` (no update), for before/after measurements."""
  return jax.jit(
    lambda params, batch: nll(nnx.merge(graphdef, params, rest), batch, chunk, prompt_len)[0]
  )


# ----------------------------------------------------------------------------- host loop


def batch_order(n_examples: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
  """[steps, batch_size] example indices: concatenated shuffled epochs, deterministic by seed."""
  rng = np.random.default_rng(seed)
  need = steps * batch_size
  epochs = [rng.permutation(n_examples) for _ in range(-(-need // n_examples))]
  return np.concatenate(epochs)[:need].reshape(steps, batch_size)


def dataset_nll(
  eval_fn,
  params,
  examples: Sequence[SFTExample],
  pad_id: int,
  shapes: tuple[int, int],
  batch_size: int,
) -> float:
  """Token-weighted mean NLL of the targets of `examples` (padding rows repeat example 0)."""
  total, count = 0.0, 0
  for i in range(0, len(examples), batch_size):
    chunk = list(examples[i : i + batch_size])
    real = len(chunk)
    chunk += [chunk[0]] * (batch_size - real)  # fixed shape; the extra rows are dropped below
    b = pack_examples(chunk, pad_id, *shapes)
    b["response_mask"][real:] = 0
    n = int(b["response_mask"].sum())
    total += float(eval_fn(params, b)) * n
    count += n
  return total / max(count, 1)


def run_sft(
  model,
  tokenizer,
  problems: Sequence[Problem],
  cfg: SFTConfig,
  out_dir: str | Path | None,
  *,
  progress: bool = True,
  statements: str = "if",
  val_problems: Sequence[Problem] | None = None,
  mesh_cfg: MeshConfig | None = None,
) -> Any:
  """Fine-tune `model` (a Decoder, updated in place) on the canonical solutions of `problems`.

  With `cfg.cccs_stages`, also on every CCCS stage prefix under gin's `cccs.statements` (the same
  for every ablation arm: `cccs.enabled` does not change the SFT data). With `val_problems`, the
  validation NLL picks the model and may stop the run early (see `train_sft`).

  Writes to `out_dir` (when given): an HF directory (config.json, safetensors, tokenizer) that
  `models.loading.load_model` reads back, so `train` can start from it and use it as the frozen
  reference policy; `metrics.jsonl` + TensorBoard events of the loss; `sft_summary.json`.

  Returns:
    the model (the same object, with the trained parameters).
  """
  return train_sft(
    model,
    tokenizer,
    problems,
    cfg,
    out_dir,
    progress=progress,
    statements=statements,
    val_problems=val_problems,
    mesh_cfg=mesh_cfg,
  )[0]


class EarlyStop:
  """Validation NLL bookkeeping: the best evaluation so far and when to give up.

  An evaluation improves on the best when it is lower by at least `min_delta`; after `patience`
  evaluations in a row that do not, `should_stop` is True (never with patience 0).
  """

  def __init__(self, patience: int, min_delta: float):
    self.patience, self.min_delta = patience, min_delta
    self.history: list[dict] = []  # {"step", "val_nll"} per evaluation
    self.best_step: int | None = None
    self.best: float | None = None
    self.bad = 0  # evaluations since the last improvement

  def update(self, step: int, val_nll: float) -> bool:
    """Record one evaluation; True when it is the new best."""
    self.history.append({"step": step, "val_nll": val_nll})
    if self.best is None or (val_nll < self.best and self.best - val_nll >= self.min_delta):
      self.best, self.best_step, self.bad = val_nll, step, 0
      return True
    self.bad += 1
    return False

  @property
  def should_stop(self) -> bool:
    return self.patience > 0 and self.bad >= self.patience

  def to_json(self) -> dict:
    """The state a resumed run needs (patience and min_delta come from its config)."""
    return {
      "history": self.history,
      "best_step": self.best_step,
      "best": self.best,
      "bad": self.bad,
    }

  def load_json(self, d: dict) -> None:
    self.history = [dict(h) for h in d["history"]]
    self.best_step, self.best, self.bad = d["best_step"], d["best"], d["bad"]


def check_batch_split(batch_size: int, mesh, rules) -> None:
  """UserError (one line) when SFT's batch rows do not split over the batch mesh axes."""
  from stepcoder_jax import sharding

  div = sharding.batch_divisor(mesh, rules)
  if batch_size % div:
    raise UserError(
      f"sft.batch_size: {batch_size} rows do not split over the {div} devices "
      f"of the batch mesh axes {sharding.batch_axes(mesh, rules)} of mesh "
      f"{sharding.describe(mesh)}"
    )


@dataclasses.dataclass
class _Placed:
  arrays: tuple  # (params, opt_state, rest) on their shardings
  shardings: SFTShardings


def _place(
  mesh_cfg: MeshConfig | None, devices, cfg: SFTConfig, params, opt_state, rest
) -> _Placed:
  from stepcoder_jax import sharding

  mesh_cfg = mesh_cfg or MeshConfig()
  mesh = sharding.make_mesh(mesh_cfg, devices)
  rules = sharding.make_rules(mesh_cfg.rules)
  check_batch_split(cfg.batch_size, mesh, rules)
  sh = sft_shardings(mesh, rules, params, opt_state, rest)
  arrays = jax.device_put((params, opt_state, rest), (sh.params, sh.opt_state, sh.rest))
  return _Placed(arrays=arrays, shardings=sh)


def check_config(cfg: SFTConfig) -> None:
  """One-line UserErrors for settings the loop cannot run with."""
  if cfg.steps < 1 or cfg.batch_size < 1:
    raise UserError(f"sft: steps ({cfg.steps}) and batch_size ({cfg.batch_size}) must be >= 1")
  if cfg.eval_every < 1 or cfg.patience < 0 or cfg.min_delta < 0:
    raise UserError(
      f"sft: eval_every ({cfg.eval_every}) must be >= 1, patience ({cfg.patience})"
      f" and min_delta ({cfg.min_delta}) >= 0"
    )
  if cfg.save_every is not None and cfg.save_every < 0:
    raise UserError(
      f"sft: save_every ({cfg.save_every}) must be >= 0 (0: no checkpoints) or "
      "None (every eval_every steps)"
    )


def train_sft(
  model,
  tokenizer,
  problems: Sequence[Problem],
  cfg: SFTConfig,
  out_dir: str | Path | None,
  *,
  progress: bool = True,
  statements: str = "if",
  val_problems: Sequence[Problem] | None = None,
  mesh_cfg: MeshConfig | None = None,
  devices: Sequence[jax.Device] | None = None,
) -> tuple[Any, dict]:
  """`run_sft`, also returning its summary (example count, NLL before/after, skipped ids).

  `statements`: the curriculum's `cccs.statements`, so the stage examples match its prompts.
  `val_problems`: examples built like the training ones (same stage rule); their mean target NLL
  is measured every `cfg.eval_every` steps and at the end. `cfg.steps` is then a maximum: after
  `cfg.patience` evaluations without an improvement of `cfg.min_delta` the run stops, and the
  model keeps (and saves) the parameters of the best evaluation, so SFT converges on validation
  loss instead of memorizing its training split for a fixed number of steps.
  `mesh_cfg` / `devices`: the mesh the step runs on (default: gin-less MeshConfig() over every
  device), with the PPO step's logical-axis rules; `sft.batch_size` must split over its batch axes.
  """
  check_config(cfg)
  stage_rule = statements if cfg.cccs_stages else None

  def examples_of(ps: Sequence[Problem], what: str) -> tuple[list[SFTExample], dict]:
    out, skipped = build_examples(
      ps,
      tokenizer,
      style=cfg.prompt_style,
      max_len=cfg.max_len,
      max_prompt_tokens=cfg.max_prompt_tokens,
      statements=stage_rule,
      output_vocab=model.cfg.output_vocab,
    )
    if not out:
      raise UserError(
        f"sft: none of the {len(ps)} {what} gives an example "
        f"(skipped: { {k: len(v) for k, v in skipped.items()} })"
      )
    return out, skipped

  examples, skipped = examples_of(problems, "problems")
  val_examples = (
    examples_of(val_problems, "validation problems")[0] if val_problems is not None else []
  )
  from stepcoder_jax.sampling import special_ids

  _, pad_id = special_ids(model.cfg, tokenizer)
  shapes = example_shapes(examples)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = make_optimizer(cfg)
  opt_state = tx.init(params)
  # The PPO step's mesh and rules (gin `mesh`): the state split over the devices, batch rows
  # over the batch axes. One device is a (1, 1, 1) mesh: the same program as unsharded.
  placed = _place(mesh_cfg, devices, cfg, params, opt_state, rest)
  params, opt_state, rest = placed.arrays
  step_fn = make_sft_step(
    graphdef, rest, tx, cfg.logprob_chunk, prompt_len=shapes[0], shardings=placed.shardings
  )
  eval_fn = make_eval_nll(graphdef, rest, cfg.logprob_chunk, prompt_len=shapes[0])
  order = batch_order(len(examples), cfg.batch_size, cfg.steps, cfg.seed)
  # A fixed subset (the first examples) measures the fit before and after; it costs forward
  # passes only, but over a whole large split that would rival the training itself.
  held = examples[: max(0, cfg.nll_examples)]

  def measure() -> float | None:
    return dataset_nll(eval_fn, params, held, pad_id, shapes, cfg.batch_size) if held else None

  validate = None
  if val_examples:
    val_shapes = example_shapes(val_examples)
    val_fn = make_eval_nll(graphdef, rest, cfg.logprob_chunk, prompt_len=val_shapes[0])

    def validate() -> float:
      return dataset_nll(val_fn, params, val_examples, pad_id, val_shapes, cfg.batch_size)

  stopper = EarlyStop(cfg.patience, cfg.min_delta)
  # The best parameters live on the host: one more copy of the weights in host memory (about
  # 1.1 GB for a 270M-parameter model in float32), none in accelerator memory.
  best_params = None
  losses, steps_run, stop_reason = [], 0, "max_steps"
  ckpts = resumed = None
  save_every = cfg.eval_every if cfg.save_every is None else cfg.save_every
  if out_dir is not None and save_every > 0:
    from stepcoder_jax.runs import sft_checkpoint

    ckpts = sft_checkpoint.SFTCheckpoints(
      out_dir,
      sft_checkpoint.fingerprint(cfg, model.cfg, examples, val_examples, shapes, stage_rule),
    )
    resumed = ckpts.restore(params, opt_state)
  if resumed is None:
    initial = measure()
    initial_val = validate() if validate else None
  else:
    params, opt_state, host = resumed
    steps_run, losses = host["step"], host["losses"]
    initial, initial_val = host["initial_nll"], host["initial_val_nll"]
    stopper.load_json(host["early_stop"])
    best_params = _resumed_best(
      model, tokenizer, cfg, graphdef, params, rest, out_dir, stopper, steps_run
    )
    _log.info("sft: resuming from step %d (%s)", steps_run, ckpts.directory)
  _log.info(
    "sft: %d examples (%d validation), up to %d steps of %d, shapes prompt %d + target "
    "%d, initial NLL %s, validation %s",
    len(examples),
    len(val_examples),
    cfg.steps,
    cfg.batch_size,
    *shapes,
    initial,
    initial_val,
  )

  writer = bar = None
  if out_dir is not None:
    from stepcoder_jax.metrics import MetricsWriter

    writer = MetricsWriter(out_dir, resumed_at=None if resumed is None else steps_run)
    if initial_val is not None and resumed is None:
      writer.write(0, {"val_nll": initial_val}, prefix="sft/")
  if progress:
    from stepcoder_jax.metrics import ProgressBar

    bar = ProgressBar(cfg.steps, initial=steps_run, desc="sft", keys=("loss",))

  def host_state() -> dict:
    return {
      "step": steps_run,
      "losses": losses,
      "initial_nll": initial,
      "initial_val_nll": initial_val,
      "early_stop": stopper.to_json(),
    }

  from stepcoder_jax import preemption

  stop = preemption.StopOnSignal(enabled=ckpts is not None).install()  # nowhere to save: no stop
  if out_dir is not None:
    preemption.clear_marker(out_dir)
  try:
    for step in range(steps_run, cfg.steps):
      batch = pack_examples([examples[i] for i in order[step]], pad_id, *shapes)
      params, opt_state, met = step_fn(params, opt_state, batch)
      met = {k: float(v) for k, v in jax.device_get(met).items()}
      losses.append(met["loss"])
      steps_run = step + 1
      last = steps_run == cfg.steps
      if writer is not None and (step % max(1, cfg.log_every) == 0 or last):
        writer.write(steps_run, met, prefix="sft/")
      if bar is not None:
        bar.update(met)
      improved = False
      if validate is not None and (steps_run % cfg.eval_every == 0 or last):
        val = validate()
        if writer is not None:
          writer.write(steps_run, {"val_nll": val}, prefix="sft/")
        improved = stopper.update(steps_run, val)
        if improved:
          best_params = jax.device_get(params)
        if stopper.should_stop:
          stop_reason = "patience"
          _log.info(
            "sft: validation NLL has not improved for %d evaluations; stopping at step "
            "%d (best %.4f at step %d)",
            cfg.patience,
            steps_run,
            stopper.best,
            stopper.best_step,
          )
          break
      if last:
        break
      stopping = stop.should_stop()
      # The checkpoint first, then the best model's HF files: a kill while those are being
      # written leaves a checkpoint whose own parameters are the best (see _resumed_best).
      if ckpts is not None and (steps_run % save_every == 0 or improved or stopping):
        with stop.saving():
          ckpts.save(steps_run, params, opt_state, host_state())
      if improved and out_dir is not None:
        save(
          nnx.merge(graphdef, params, rest),
          tokenizer,
          out_dir,
          _best_summary(cfg, stopper, steps_run),
        )
      if stopping:
        if writer is not None:
          writer.close()
        raise stop.stopped(out_dir, f"step {steps_run}", ckpts.directory / str(steps_run))
  except BaseException:
    if ckpts is not None:
      ckpts.close()  # the last checkpoint stays, for the next run to resume from
    raise
  finally:
    stop.restore()
    # The step donates its inputs (the model's own arrays on the first step), so the model must
    # get the latest parameters back even when the loop is interrupted.
    nnx.update(model, params)
    if bar is not None:
      bar.close()
  if best_params is not None and stopper.best_step != steps_run:
    params = jax.tree.map(lambda h, d: jax.device_put(h, d.sharding), best_params, params)
    nnx.update(model, params)
  final = measure()
  _log.info("sft: NLL of the targets %s -> %s", initial, final)
  summary = {
    "examples": len(examples),
    "steps": cfg.steps,
    "steps_run": steps_run,
    "stop_reason": stop_reason,
    "nll_examples": len(held),
    "initial_nll": initial,
    "final_nll": final,
    "last_loss": losses[-1] if losses else None,
    "skipped": dict(skipped),
    "config": dataclasses.asdict(cfg),
    "finished": True,
  }
  if validate is not None:
    summary.update(
      {
        "val_examples": len(val_examples),
        "initial_val_nll": initial_val,
        "best_step": stopper.best_step,
        "best_val_nll": stopper.best,
        "val_nll": stopper.history,
      }
    )
  if writer is not None:
    if held:
      writer.write(steps_run, {"initial_nll": initial, "final_nll": final}, prefix="sft/")
    writer.close()
  if out_dir is not None:
    save(model, tokenizer, out_dir, summary)
  if ckpts is not None:
    ckpts.remove()
  return model, summary


def _best_summary(cfg: SFTConfig, stopper: "EarlyStop", steps_run: int) -> dict:
  """The summary next to the best model of an unfinished run (`finished: false`)."""
  return {
    "steps_run": steps_run,
    "best_step": stopper.best_step,
    "best_val_nll": stopper.best,
    "val_nll": stopper.history,
    "config": dataclasses.asdict(cfg),
    "finished": False,
  }


def _resumed_best(
  model,
  tokenizer,
  cfg: SFTConfig,
  graphdef,
  params,
  rest,
  out_dir: str | Path,
  stopper: "EarlyStop",
  step: int,
) -> Any:
  """The host copy of the best parameters of a run resumed at `step` (None before any eval).

  The loop saves a checkpoint before it writes a new best model to `out_dir`, so: when the best
  is the checkpoint's own step, the checkpoint's parameters are the best (and `out_dir` is
  written again unless its summary says it holds them: the kill may have cut that write short);
  an earlier best was completely written to `out_dir` before this checkpoint was started, and is
  read back from there (its safetensors hold the exact float32/bfloat16 values).
  """
  import json

  from stepcoder_jax.models import hf_io

  if stopper.best_step is None:
    return None
  try:
    on_disk = json.loads((Path(out_dir) / "sft_summary.json").read_text()).get("best_step")
  except (OSError, ValueError):
    on_disk = None
  if stopper.best_step == step:
    if on_disk != step:
      save(nnx.merge(graphdef, params, rest), tokenizer, out_dir, _best_summary(cfg, stopper, step))
    return jax.device_get(params)
  if on_disk != stopper.best_step:
    from stepcoder_jax.checkpoint import checkpoint_dir

    raise UserError(
      f"sft: {out_dir} holds the model of step {on_disk}, its checkpoint's best is "
      f"step {stopper.best_step}; delete {checkpoint_dir(out_dir)} to start over"
    )
  best = nnx.state(hf_io.decoder_from_tensors(model.cfg, Path(out_dir)), nnx.Param)
  return jax.device_get(best)


def finished_summary(out_dir: str | Path) -> dict | None:
  """The summary of a finished SFT run in `out_dir`, or None (nothing there, or unfinished)."""
  import json

  path = Path(out_dir) / "sft_summary.json"
  try:
    summary = json.loads(path.read_text())
  except (OSError, ValueError):
    return None
  return summary if isinstance(summary, dict) and summary.get("finished") is True else None


def write_provenance(out: Path, model: str | None, data: str, n_problems: int, cfg) -> None:
  """The model card's account of an SFT run (`export` reads it)."""
  from stepcoder_jax.models import model_card
  from stepcoder_jax.models.config import ModelSpec

  base = model or ModelSpec().path
  model_card.write_provenance(
    out,
    base_model=model_card.read_provenance(base).get("base_model") or base,
    data=f"{data} ({n_problems} problems)",
    method="supervised fine-tuning on the reference solutions and their CCCS stage prefixes "
    "(stepcoder_jax sft)",
    settings={
      "sft.steps": cfg.steps,
      "sft.batch_size": cfg.batch_size,
      "sft.learning_rate": cfg.learning_rate,
    },
  )


def save(model, tokenizer, out_dir: str | Path, summary: dict | None = None) -> Path:
  """Write `model` as an HF directory (what `load_model` and `train --model` read)."""
  import json

  from stepcoder_jax.models import hf_io

  out = hf_io.export(model.cfg, model, tokenizer, out_dir)
  if summary is not None:
    (Path(out) / "sft_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
  return Path(out)
