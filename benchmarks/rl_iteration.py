"""One RL iteration, ours against TRL's GRPOTrainer (PyTorch, `use_vllm=False`), in the same run.

Both sides do the same work: the same bundled train problems in the same order (the plain prompt
our trainer builds, no CCCS prefix), 4 prompts x 4 samples, <= 128 new tokens at temperature 1,
the same starting weights (the cached Gemma 3 270M: ours from its converted cache, TRL from the HF
directory written from the same GGUF), the token embedding frozen on both sides, KL coefficient
0.05 to a frozen reference, fp32, 2 threads, one optimizer step, and the same judge: our
ExecutionPool, called from TRL's reward function on the completion cut the way ours is cut.

Each side runs in its own subprocess (its peak RSS is its own `ru_maxrss`; the judge's worker
processes are not counted on either side). The first iteration compiles (ours) or warms up
(torch); the figures are the mean of the warm iterations after it (`--iterations` in all).

Buckets, seconds per iteration:
  generation  ours: the jitted sampler (`time/sample_s`); TRL: `GRPOTrainer._generate`.
  scoring     forwards without gradient over the sampled batch. Ours: reference log-probs
              (and old ones with --no_sampler_logprobs; by default they come out of the sampler)
              in one jitted call (GRPO has no value forward; `gae` adds it), timed to
              completion. TRL: its `_get_per_token_logps_and_entropies` calls under no_grad (only
              the reference: with one generation per step it takes old log-probs as the detached
              new ones, no forward).
  judging     ours: from submitting the programs to the pool until their results are in (it
              overlaps the scoring forwards, so buckets may add up to more than the iteration);
              TRL: its `_calculate_rewards` (our pool, called synchronously).
  update      ours: the jitted ppo_step, to completion; TRL: the rest of the optimizer step
              (loss forward, backward, clipping, AdamW), i.e. the step minus
              `_generate_and_score_completions`.
  other       the iteration minus the buckets above (host work: prompts, cutting, packing,
              metrics; for ours minus the overlap).

  python benchmarks/rl_iteration.py            # Gemma 3 270M: TRL, ours grpo, ours gae, demo
  python benchmarks/rl_iteration.py --tiny     # a tiny random Llama on both sides (smoke test)

Levers of ours, on by default (each printed with the results; flags turn them off):
  sampler log-probs   `train.sampler_logprobs`: old log-probs from the sampler, one scoring
                      forward fewer (--no_sampler_logprobs).
  output vocabulary   `model.output_vocab = 'gemma3_code'` from cpu_demo_gemma.gin: sampling and
                      scoring over 34,034 of Gemma's 262,144 ids, a documented deviation
                      (--no_output_vocab; never with --tiny, whose tokenizer is another).
  remat               `model.remat` (cpu_demo_gemma: 'full'; the grpo side: 'none' in micro-batches
                      of 2 rows, MICRO_ROWS); --remat full|none|dots sets it.
  group prefill       `train.prefill_per_group`: the sampler prefills one row per problem and
                      its samples share the cache (--no_prefill_per_group).
  prompt columns      `train.prompt_bucket`: a batch's prompts padded to its longest prompt
                      rounded up to 32, not to the limit's bucket (256); TRL pads to the longest
                      (--no_prompt_bucket).
  TRL keeps the full vocabulary and its own scoring.

The machine's limits, measured in the same run after the sides (benchmarks/limits.py): fp32
`jnp.dot` throughput (2048^3, 4096^3 and the update's MLP shape [rows x T, D] x [D, F]) and memory
bandwidth (a 1 GiB sum, NumPy and XLA). For each side of ours, each bucket's fraction of its bound:
update and scoring = analytic matmul FLOPs / best dot throughput / warm seconds; generation = per
phase (prefill, each decode step) the larger of FLOPs / throughput and bytes / bandwidth, summed,
over warm seconds. FLOPs are counted from the model's shapes, not XLA's cost_analysis (which
counts a loop body once).

The last line is `speedup vs TRL: N.NNx` (TRL's warm seconds per iteration over ours, GRPO).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

THREADS = 2
KL = 0.05
LR = 2e-6

# What each of our arms binds on top of its experiment config.
# GRPO's memory left: the critic-free step fits without rematerialization in micro-batches of
# MICRO_ROWS rows (measured at 16 rows: 7.75 GB peak against TRL's 8.55-8.84 GB; remat 'full' in
# one batch peaks at 7.65 GB but computes the forward twice); the gradient is the same (ppo.py
# divides by the minibatch's response tokens). --remat overrides the policy.
MICRO_ROWS = 2
# The demo's config fixes the prompt width (6 iterations: one compile); the sides measured at
# steady state take the trainer's default, 32-token widths.
WIDTH = ["train.prompt_bucket = 32"]
ARMS = {
  "grpo": ["ppo.advantage = 'grpo'", "cccs.enabled = False", "fgo.enabled = False"] + WIDTH,
  "gae": ["ppo.advantage = 'gae'", "cccs.enabled = False", "fgo.enabled = False"] + WIDTH,
  "demo": [],  # the demo's own iteration: gae + CCCS + FGO, its own batch (4 x 1)
}


def _set_threads() -> None:
  os.environ.setdefault("XLA_FLAGS", "")
  os.environ["OMP_NUM_THREADS"] = str(THREADS)
  os.environ["MKL_NUM_THREADS"] = str(THREADS)


def _peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _choose_problems():
  from stepcoder_jax.runs.trainer import choose_problems

  return choose_problems


def _work(args) -> dict:
  """Paths and sizes shared by both sides."""
  if args.tiny:
    return {
      "gin": "experiments/tiny_cpu.gin",
      "ours": args.hf_dir,
      "hf": args.hf_dir,
      "max_new": args.max_new_tokens or 32,
      "prompt_tokens": 384,
    }
  from stepcoder_jax.models import gguf

  return {
    "gin": "experiments/cpu_demo_gemma.gin",
    "ours": gguf.BUNDLED_NAME,
    "hf": str(gguf.bundled_hf_dir()),
    "max_new": args.max_new_tokens or 128,
    "prompt_tokens": 256,
  }


def _bindings(args, w: dict, arm: str, work_dir: str) -> list[str]:
  b = [
    f"train.work_dir = '{work_dir}'",
    "train.eval_every = 0",
    f"train.max_new_tokens = {w['max_new']}",
    f"prompt.max_tokens = {w['prompt_tokens']}",
    "checkpoint.save_interval_steps = 0",
    f"ppo.kl_coef = {KL}",
    f"ppo.policy_lr = {LR}",
    "ppo.epochs = 1",
    "ppo.minibatches = 1",
    "ppo.train_embeddings = False",
  ]
  if arm != "demo":
    b += [
      f"train.problems_per_iteration = {args.prompts}",
      f"train.samples_per_problem = {args.group}",
    ] + ARMS[arm]
    if arm == "grpo":
      rows = args.prompts * args.group  # the most micro-batches of >= MICRO_ROWS that divide it
      accum = next(a for a in range(max(1, rows // MICRO_ROWS), 0, -1) if rows % a == 0)
      b += ["model.remat = 'none'", f"ppo.grad_accum = {accum}"]
  return b + lever_bindings(args) + list(args.bind)


def lever_bindings(args) -> list[str]:
  """Gin bindings that turn levers off (they are on in the experiment config and defaults)."""
  b = []
  if args.no_sampler_logprobs:
    b.append("train.sampler_logprobs = False")
  if args.no_output_vocab or args.tiny:
    b.append("model.output_vocab = None")
  if args.remat:
    b.append(f"model.remat = '{args.remat}'")
  if args.no_prefill_per_group:
    b.append("train.prefill_per_group = False")
  if args.no_prompt_bucket:
    b.append("train.prompt_bucket = 0")
  return b


def levers(args) -> str:
  on = lambda off: "off" if off else "on"
  return (
    f"levers of ours: sampler log-probs {on(args.no_sampler_logprobs)}, output vocabulary "
    f"{on(args.no_output_vocab or args.tiny)}"
    f"{' (gemma3_code)' if not (args.no_output_vocab or args.tiny) else ''}, remat "
    f"{args.remat or 'grpo: none, 2-row micro-batches; others: the experiment config'}, "
    "prefill once per group "
    f"{on(args.no_prefill_per_group)}, prompt columns per batch {on(args.no_prompt_bucket)} "
    "(the demo side: its config's fixed width)"
  )


# ------------------------------------------------------------------------------------ ours


def run_ours(args, arm: str) -> dict:
  """Our trainer through the pipeline's public entry points; buckets from timed wrappers."""
  import jax

  from stepcoder_jax import gin_setup
  from stepcoder_jax.runs import pipeline
  from stepcoder_jax.rl.config import TrainConfig

  w = _work(args)
  with tempfile.TemporaryDirectory() as tmp:
    gin_setup.parse([w["gin"]], _bindings(args, w, arm, tmp))
    t = time.perf_counter()
    models = pipeline.load_policy(w["ours"])
    load_s = time.perf_counter() - t
    problems = pipeline.load_split("train", "stepcoder_builtin")
    pool = pipeline.open_pool()
    try:
      trainer = pipeline.make_trainer(TrainConfig(), models, problems, pool)
      clock = _instrument_ours(trainer, pool)
      iters = []
      for _ in range(args.iterations):
        clock.clear()
        m = trainer.iterate()
        rows = trainer.cfg.problems_per_iteration * trainer.cfg.samples_per_problem
        iters.append(
          {
            "iteration_s": m["time/iteration_s"],
            "generation_s": m.get("time/sample_s", float("nan")),
            "scoring_s": clock.get("forward", float("nan")),
            "judging_s": clock.get("judge", float("nan")),
            "update_s": clock.get("update", float("nan")),
            "prompt_columns": clock.get("prompt_columns"),
            "tokens": m.get("response_tokens_mean", 0.0) * rows,
            "reward_mean": m.get("reward_mean"),
            "rows": rows,
            "decode_steps": clock.get("decode_steps", 0),
          }
        )
        print(
          f"  ours {arm} iteration {len(iters)}: {iters[-1]['iteration_s']:.1f} s",
          file=sys.stderr,
          flush=True,
        )
    finally:
      pool.close()
    work = _work_of(trainer, iters[-1]["prompt_columns"])
  return {
    "side": f"ours_{arm}",
    "load_s": load_s,
    "iterations": iters,
    "peak_rss_gb": _peak_rss_gb(),
    "jax": jax.__version__,
    "work": work,
  }


def _work_of(trainer, p: int) -> dict:
  """The analytic work of one iteration's buckets (benchmarks/limits.py) and the update's
  matmul shape, for the fractions of the machine's bounds, at `p` prompt columns (the last
  iteration's: `bucket_fractions` warns when the warm iterations' differ)."""
  import limits

  cfg, ppo_cfg = trainer.models.cfg, trainer.ppo_cfg
  s = limits.Shapes.of(cfg)
  rows = trainer.cfg.problems_per_iteration * trainer.cfg.samples_per_problem
  r = trainer.rollout.response_len
  models = 1 if ppo_cfg.critic_free else 2
  remat = remat_name(cfg.remat)
  gen = limits.generation_work(s, rows, p, r, 1)
  if trainer.cfg.prefill_per_group:  # the prefill runs on one row per problem
    gen[0] = limits.generation_work(s, trainer.cfg.problems_per_iteration, p, r, 0)[0]
  return {
    "remat": remat,
    "update_flops": limits.update_flops(
      s, rows, p, r, remat=remat, models=models, epochs=ppo_cfg.epochs
    ),
    "scoring_flops": limits.scoring_flops(
      s,
      rows,
      p,
      r,
      policy_forwards=1 if trainer.cfg.sampler_logprobs else 2,
      value_forwards=models - 1,
    ),
    "prefill": dataclasses.asdict(gen[0]),
    "decode_step": dataclasses.asdict(gen[1]),
    "dot_shape": [rows * (p + r), cfg.hidden_size, cfg.intermediate_size],
  }


def remat_name(remat) -> str:
  """A ModelConfig.remat value as a policy name (True and False are 'full' and 'none')."""
  return {True: "full", False: "none"}.get(remat, remat) if isinstance(remat, bool) else remat


def _instrument_ours(trainer, pool) -> dict:
  """Time the trainer's scoring forwards, update and judging without changing what runs.

  The forward and ppo_step are waited on right after dispatch; the programs are already with the
  pool by then, so judging still overlaps the forward as in a plain iteration.
  """
  import jax

  clock: dict[str, float] = {}

  def timed(name, fn):
    def run(*a, **k):
      t = time.perf_counter()
      out = jax.block_until_ready(fn(*a, **k))
      clock[name] = clock.get(name, 0.0) + time.perf_counter() - t
      return out

    return run

  holder = getattr(trainer, "rollout", trainer)  # the rollout object owns the forward (if any)
  # One forward and one step per prompt width (train.prompt_bucket); each is timed.
  forward_for, step_for = holder.forward_for, trainer.ppo_step_for
  holder.forward_for = lambda p: timed("forward", forward_for(p))
  trainer.ppo_step_for = lambda p: timed("update", step_for(p))
  submit = pool.submit

  def submit_timed(jobs):
    t = time.perf_counter()
    fut = submit(jobs)
    fut.add_done_callback(lambda _: clock.__setitem__("judge", time.perf_counter() - t))
    return fut

  pool.submit = submit_timed
  sample = holder.sampler

  def sample_counted(state, prompt_ids, rng, **k):
    out = sample(state, prompt_ids, rng, **k)
    ids = getattr(out, "ids", out)  # the decode loop runs until the longest row ends
    clock["decode_steps"] = max((len(i) for i in ids), default=0)
    clock["prompt_columns"] = k.get("prompt_len", holder.prompt_len)
    return out

  holder.sampler = sample_counted
  return clock


# ------------------------------------------------------------------------------------- TRL


def _prompts(args, w: dict, tok, problems) -> list:
  """The plain prompt (parts) our trainer builds for iteration i's problems, in its order."""
  try:
    from stepcoder_jax.rl import rollout
  except ImportError:
    from stepcoder_jax.runs import rollout  # type: ignore
  choose = _choose_problems()
  out = []
  for it in range(args.iterations):
    chosen = choose(problems, args.prompts, 0, it)
    items, _ = rollout.make_items(chosen, None, tok, "plain", w["prompt_tokens"])
    out += [(i.problem, i.prompt) for i in items]
  return out


def run_trl(args) -> dict:
  """TRL's GRPOTrainer on the same prompts, weights, judge and sizes; buckets by wrapping."""
  import torch
  import transformers
  import trl
  from datasets import Dataset

  from stepcoder_jax import completion
  from stepcoder_jax.execution import ExecutionPool
  from stepcoder_jax.execution.config import ExecutionConfig
  from stepcoder_jax.execution.job import Job
  from stepcoder_jax.runs import pipeline
  from stepcoder_jax.models.tokenizer import load_tokenizer

  torch.set_num_threads(THREADS)
  torch.manual_seed(0)
  w = _work(args)
  tok = load_tokenizer(w["hf"], fast=True)
  problems = pipeline.load_split("train", "stepcoder_builtin")
  pairs = _prompts(args, w, tok, problems)
  by_text = {parts.text: (p, parts) for p, parts in pairs}
  eos_ids = [i for i in {tok.eos_token_id, *(_extra_eos(w["hf"]))} if i is not None]
  t = time.perf_counter()
  model = transformers.AutoModelForCausalLM.from_pretrained(w["hf"], dtype=torch.float32)
  load_s = time.perf_counter() - t
  model.get_input_embeddings().weight.requires_grad_(False)  # tied head: frozen too, as ours

  # The judge: the same pool config as ours (gin's execution defaults of the experiment file).
  from stepcoder_jax import gin_setup

  gin_setup.parse([w["gin"]], [])
  pool = ExecutionPool(ExecutionConfig())
  pool.start()
  clock: dict[str, float] = {}

  def reward(prompts, completions, completion_ids, **_):
    jobs = []
    for text, ids in zip(prompts, completion_ids):
      problem, parts = by_text[text]
      c = completion.cut(tok, list(ids), parts.stop, eos_ids, context=parts.text)
      jobs.append(Job(problem=problem, completion=c.text, prefix=parts.code_prefix))
    return [r.reward for r in pool.run(jobs)]

  cfg = trl.GRPOConfig(
    output_dir=tempfile.mkdtemp(),
    use_cpu=True,
    bf16=False,
    fp16=False,
    per_device_train_batch_size=args.prompts * args.group,
    num_generations=args.group,
    gradient_accumulation_steps=1,
    steps_per_generation=1,
    num_iterations=1,
    max_steps=args.iterations,
    max_completion_length=w["max_new"],
    temperature=1.0,
    beta=KL,
    learning_rate=LR,
    lr_scheduler_type="constant",
    warmup_steps=0,
    shuffle_dataset=False,
    use_vllm=False,
    report_to="none",
    save_strategy="no",
    logging_steps=1,
    seed=0,
    dataloader_num_workers=0,
    disable_tqdm=True,
  )
  data = Dataset.from_list([{"prompt": parts.text} for _, parts in pairs])
  trainer = trl.GRPOTrainer(
    model=model, reward_funcs=reward, args=cfg, train_dataset=data, processing_class=tok
  )
  _instrument_trl(trainer, clock)
  steps: list[dict] = []
  marks: dict[str, float] = {}

  class Steps(transformers.TrainerCallback):
    def on_step_begin(self, *a, **k):
      clock.clear()
      marks["t"] = time.perf_counter()

    def on_step_end(self, *a, **k):
      total = time.perf_counter() - marks["t"]
      steps.append(
        {
          "iteration_s": total,
          "generation_s": clock.get("generate", 0.0),
          "scoring_s": clock.get("score", 0.0),
          "judging_s": clock.get("judge", 0.0),
          "update_s": total - clock.get("generate_and_score", 0.0),
          "tokens": clock.get("tokens", 0.0),
          "rows": args.prompts * args.group,
        }
      )
      print(f"  TRL step {len(steps)}: {total:.1f} s", file=sys.stderr, flush=True)

  trainer.add_callback(Steps())
  try:
    trainer.train()
  finally:
    pool.close()
  return {
    "side": "trl",
    "load_s": load_s,
    "iterations": steps,
    "peak_rss_gb": _peak_rss_gb(),
    "trl": trl.__version__,
    "torch": torch.__version__,
  }


def _extra_eos(hf_dir: str) -> list[int]:
  """EOS ids of the generation config (Gemma ends turns with <end_of_turn> as well)."""
  try:
    import transformers

    e = transformers.GenerationConfig.from_pretrained(hf_dir).eos_token_id
  except OSError:
    return []
  return list(e) if isinstance(e, (list, tuple)) else [e]


def _instrument_trl(trainer, clock: dict) -> None:
  """Accumulate TRL's phase times into `clock` by wrapping the trainer's own methods."""
  import torch

  def wrap(name, key, count_tokens=False, only_no_grad=False):
    fn = getattr(trainer, name)

    def run(*a, **k):
      t = time.perf_counter()
      out = fn(*a, **k)
      if not only_no_grad or not torch.is_grad_enabled():
        clock[key] = clock.get(key, 0.0) + time.perf_counter() - t
      if count_tokens:  # _generate returns (prompt_ids, completion_ids, ...)
        clock["tokens"] = clock.get("tokens", 0.0) + sum(len(c) for c in out[1])
      return out

    setattr(trainer, name, run)

  wrap("_generate", "generate", count_tokens=True)
  wrap("_calculate_rewards", "judge")
  wrap("_get_per_token_logps_and_entropies", "score", only_no_grad=True)
  wrap("_generate_and_score_completions", "generate_and_score")


# ------------------------------------------------------------------------------ the driver


def _tiny_dir(path: str) -> str:
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from decode import _tiny_llama_dir

  return _tiny_llama_dir(path)


def run_limits(args) -> dict:
  """This machine's fp32 matmul throughput and memory bandwidth, measured now (limits.py)."""
  import limits

  sq = (256, 512) if args.tiny else (2048, 4096)
  shapes = [(n, n, n) for n in sq]
  if args.dot_shape:
    shapes.append(tuple(int(x) for x in args.dot_shape.split(",")))
  return {
    "side": "limits",
    "matmul_flops_s": limits.measure_matmul(shapes),
    "bandwidth_bytes_s": limits.measure_bandwidth((64 if args.tiny else 1024) << 20),
  }


def _side(args) -> int:
  _set_threads()
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  if args.side == "limits":
    r = run_limits(args)
  else:
    r = run_trl(args) if args.side == "trl" else run_ours(args, args.side)
  with open(args.out, "w") as f:
    json.dump(r, f)
  return 0


def _warm_mean(r: dict, key: str) -> float:
  it = r["iterations"][1:] or r["iterations"]
  return sum(x[key] for x in it) / len(it)


def _line(name: str, r: dict) -> str:
  m = {
    k: _warm_mean(r, k)
    for k in ("iteration_s", "generation_s", "scoring_s", "judging_s", "update_s", "tokens")
  }
  first = r["iterations"][0]["iteration_s"]
  return (
    f"{name:10s} {m['iteration_s']:7.1f} s/it (first {first:6.1f}) | gen "
    f"{m['generation_s']:6.1f} | score {m['scoring_s']:5.1f} | judge {m['judging_s']:5.1f} "
    f"| update {m['update_s']:5.1f} | {m['tokens'] / m['iteration_s']:6.1f} tok/s "
    f"({m['tokens'] / max(m['generation_s'], 1e-9):6.1f} while generating) | "
    f"peak RSS {r['peak_rss_gb']:5.2f} GB | rows {r['iterations'][0]['rows']}"
  )


def _run_side(args, side: str, tmp: str, hf_dir: str | None, extra=()) -> dict:
  """One side in its own subprocess; its JSON result, with the process's wall time."""
  out = os.path.join(tmp, f"{side}.json")
  cmd = [sys.executable, os.path.abspath(__file__), "--side", side, "--out", out]
  for k in ("iterations", "prompts", "group", "max_new_tokens"):
    cmd += [f"--{k}", str(getattr(args, k))]
  cmd += ["--remat", args.remat] if args.remat else []
  cmd += ["--tiny", "--hf_dir", hf_dir] if args.tiny else []
  for b in args.bind:
    cmd += ["--bind", b]
  offs = ("--no_sampler_logprobs", "--no_output_vocab", "--no_prefill_per_group")
  offs += ("--no_prompt_bucket",)
  cmd += [f for f in offs if getattr(args, f[2:])]
  t = time.perf_counter()
  subprocess.run(cmd + list(extra), check=True)
  with open(out) as f:
    r = json.load(f)
  r["process_s"] = time.perf_counter() - t
  return r


def bucket_fractions(r: dict, lim: dict) -> dict:
  """Per bucket of a side of ours: the bound (s) at this machine's limits and the fraction of
  it reached in the warm iterations (limits.py). Throughput: the best measured dot; bandwidth:
  the faster measured sum (the stricter bounds)."""
  import limits

  flops_s = max(lim["matmul_flops_s"].values())
  bytes_s = max(lim["bandwidth_bytes_s"].values())
  w = r["work"]
  widths = {i.get("prompt_columns") for i in r["iterations"][1:]}
  if len(widths) > 1:
    print(f"note: the warm iterations had prompt widths {sorted(widths)}; bounds use the last")
  steps = _warm_mean(r, "decode_steps")
  pre, step = limits.Work(**w["prefill"]), limits.Work(**w["decode_step"])
  gen_bound = pre.bound_s(flops_s, bytes_s) + steps * step.bound_s(flops_s, bytes_s)
  bounds = {
    "update": w["update_flops"] / flops_s,
    "scoring": w["scoring_flops"] / flops_s,
    "generation": gen_bound,
  }
  out = {}
  for k, b in bounds.items():
    out[k] = {"bound_s": b, "fraction": limits.fraction(b, _warm_mean(r, f"{k}_s"))}
  out["generation"].update(
    decode_steps=steps,
    flops=pre.flops + steps * step.flops,
    bytes=pre.bytes + steps * step.bytes,
  )
  return out


def _limits_line(lim: dict) -> str:
  dots = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in lim["matmul_flops_s"].items())
  bw = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in lim["bandwidth_bytes_s"].items())
  return f"limits: fp32 jnp.dot GFLOP/s [m x k x n]: {dots}; bandwidth GB/s: {bw}"


def _fractions_line(name: str, r: dict) -> str:
  f, w = r["fractions"], r["work"]
  g = f["generation"]
  return (
    f"{name:10s} fraction of bound (analytic FLOPs, remat {w['remat']}): update "
    f"{f['update']['fraction']:.2f} ({w['update_flops'] / 1e9:.4g} GFLOP) | scoring "
    f"{f['scoring']['fraction']:.2f} ({w['scoring_flops'] / 1e9:.4g} GFLOP) | generation "
    f"{g['fraction']:.2f} (bound {g['bound_s']:.1f} s: {g['flops'] / 1e9:.4g} GFLOP, "
    f"{g['bytes'] / 1e9:.3g} GB, {g['decode_steps']:.0f} steps)"
  )


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--tiny", action="store_true", help="a tiny random Llama (smoke test)")
  p.add_argument("--sides", default="trl,grpo,gae,demo", help="comma list: trl, grpo, gae, demo")
  p.add_argument("--iterations", type=int, default=2, help="per side; the first is not timed")
  p.add_argument("--prompts", type=int, default=4)
  p.add_argument("--group", type=int, default=4, help="samples per prompt")
  p.add_argument("--max_new_tokens", type=int, default=0, help="0: 128 (Gemma), 32 (tiny)")
  p.add_argument("--bind", action="append", default=[], help="extra gin binding for ours")
  p.add_argument(
    "--no_sampler_logprobs",
    action="store_true",
    help="ours: score old log-probs with a forward pass (train.sampler_logprobs off)",
  )
  p.add_argument(
    "--no_output_vocab",
    action="store_true",
    help="ours: the full vocabulary (model.output_vocab = None)",
  )
  p.add_argument(
    "--no_prefill_per_group",
    action="store_true",
    help="ours: prefill every row, not one per problem (train.prefill_per_group off)",
  )
  p.add_argument(
    "--no_prompt_bucket",
    action="store_true",
    help="ours: prompts padded to the limit's bucket, not the batch's longest (prompt_bucket 0)",
  )
  p.add_argument(
    "--remat",
    choices=("full", "none", "dots"),
    default=None,
    help="ours: model.remat policy (default: the experiment config's; cpu_demo_gemma: full)",
  )
  p.add_argument("--json", default=None, help="also write the results here")
  p.add_argument("--dot_shape", default=None, help=argparse.SUPPRESS)
  p.add_argument("--side", default=None, help=argparse.SUPPRESS)
  p.add_argument("--out", default=None, help=argparse.SUPPRESS)
  p.add_argument("--hf_dir", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.side:
    return _side(args)
  if args.iterations < 2:
    p.error("--iterations must be >= 2 (the first one compiles)")
  machine = {
    "platform": platform.platform(),
    "cpus": os.cpu_count(),
    "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    "threads": THREADS,
  }
  print(f"machine: {machine}", flush=True)
  print(levers(args), flush=True)
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    hf_dir = _tiny_dir(os.path.join(tmp, "tiny")) if args.tiny else None
    for side in [s.strip() for s in args.sides.split(",") if s.strip()]:
      results[side] = _run_side(args, side, tmp, hf_dir)
      print(_line(side, results[side]), flush=True)
    ours = [k for k, r in results.items() if "work" in r]
    if ours:  # the limits last, in the same run: the update's shape comes from ours
      shape = results[ours[0]]["work"]["dot_shape"]
      lim = _run_side(args, "limits", tmp, hf_dir, ["--dot_shape", ",".join(map(str, shape))])
      results["limits"] = lim
      print(_limits_line(lim), flush=True)
      for k in ours:
        results[k]["fractions"] = bucket_fractions(results[k], lim)
        print(_fractions_line(k, results[k]), flush=True)
  machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
  print(f"load average at end: {machine['loadavg_end']}; warm iterations: 2..{args.iterations}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"machine": machine, "levers": levers(args), "results": results}, f, indent=2)
  if "trl" in results and "grpo" in results:
    ratio = _warm_mean(results["trl"], "iteration_s") / _warm_mean(results["grpo"], "iteration_s")
    mem = results["grpo"]["peak_rss_gb"] / results["trl"]["peak_rss_gb"]
    print(f"peak RSS ours/TRL: {mem:.2f}")
    print(f"speedup vs TRL: {ratio:.2f}x")
  return 0


if __name__ == "__main__":
  sys.exit(main())
