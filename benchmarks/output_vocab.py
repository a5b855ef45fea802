"""Greedy decoding with a restricted output vocabulary against the full one (a speed lever).

`model.output_vocab` restricts the policy's softmax to a fixed subset of token ids (the shipped
`gemma3_code`: 34,034 of Gemma's 262,144). That is a deviation from the model, so its cost has to
be measured where it shows: does greedy decoding still pick the same tokens, and how far do the
log-probs of those tokens move (the subset's softmax drops the mass of every other id)?

Same parameters on both sides (the restricted decoder is the full one with `cfg.output_vocab`
set), the bundled test problems' plain prompts built as evaluation builds them, batch 8, greedy.
EOS does not stop the sampler, so every row decodes all `--max_new_tokens` on both sides and the
tok/s compare equal work; tokens are compared up to and including the full side's first EOS (the
part an evaluation keeps). Each side gets one untimed warm-up (its compile), then one timed pass.

  python benchmarks/output_vocab.py                  # Gemma 3 270M with the shipped gemma3_code
  python benchmarks/output_vocab.py --tiny           # tiny random Llama, random half of its ids
  python benchmarks/output_vocab.py --vocab data/vocab/run.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np


def _prompt_ids(tok, n: int) -> list[list[int]]:
  """The first `n` bundled test problems' s* = 0 prompts that fit evaluation's prompt limit."""
  from stepcoder_jax.runs import pipeline
  from stepcoder_jax.runs.config import EvalConfig
  from stepcoder_jax.runs.evaluation import problem_prompts

  fits = problem_prompts(pipeline.load_split("test", "stepcoder_builtin"), tok, EvalConfig())
  return [ids for _, ids in (f for f in fits if f is not None)][:n]


def _decode(model, prompts: list[list[int]], batch: int, new_tokens: int, pad_id: int):
  """(greedy tokens [N, T], their log-probs [N, T], decode seconds) in batches of `batch`."""
  import jax
  from flax import nnx

  from stepcoder_jax import sampling
  from stepcoder_jax.models.config import SamplingConfig

  sc = SamplingConfig(
    max_new_tokens=new_tokens, min_prompt_bucket=sampling.bucket(max(map(len, prompts)), 16)
  )
  graphdef, state = nnx.split(model)
  run = sampling.make_sampler(graphdef, sc, (), pad_id)  # no EOS ids: all rows run to the end
  rows = prompts + (prompts * batch)[: -len(prompts) % batch]  # last batch filled by repetition
  batches = [
    sampling.pad_prompts(rows[i : i + batch], pad_id, sc.min_prompt_bucket)
    for i in range(0, len(rows), batch)
  ]
  key = jax.random.key(0)
  jax.block_until_ready(run(state, *batches[0], key, 1))  # compile (max_new_tokens is traced)
  t = time.perf_counter()
  outs = [jax.device_get(run(state, tokens, mask, key)) for tokens, mask in batches]
  seconds = time.perf_counter() - t
  tokens = np.concatenate([np.asarray(o.tokens) for o in outs])[: len(prompts), :new_tokens]
  logp = np.concatenate([np.asarray(o.logprobs) for o in outs])[: len(prompts), :new_tokens]
  return tokens, logp, seconds


def compare(full, restricted, subset, eos_ids) -> dict:
  """Per prompt: the compared span, the first differing position (None: identical), the
  |log-prob difference| over the agreeing prefix and the full side's tokens outside `subset`."""
  (tok_f, lp_f), (tok_r, lp_r) = full, restricted
  inside = np.zeros(max(int(tok_f.max()), max(subset)) + 1, bool)
  inside[list(subset)] = True
  rows = []
  for a, b, la, lb in zip(tok_f, tok_r, lp_f, lp_r):
    ends = np.flatnonzero(np.isin(a, eos_ids))
    span = int(ends[0]) + 1 if ends.size else a.size
    diff = np.flatnonzero(a[:span] != b[:span])
    agree = int(diff[0]) if diff.size else span
    gap = np.abs(la[:agree] - lb[:agree])
    rows.append(
      {
        "span": span,
        "first_diff": int(diff[0]) if diff.size else None,
        "gap_max": float(gap.max()) if agree else 0.0,
        "gap_sum": float(gap.sum()),
        "agree": agree,
        "outside": int((~inside[a[:span]]).sum()),
      }
    )
  return {
    "rows": rows,
    "identical": sum(r["first_diff"] is None for r in rows),
    "gap_max": max(r["gap_max"] for r in rows),
    "gap_mean": sum(r["gap_sum"] for r in rows) / max(1, sum(r["agree"] for r in rows)),
    "outside": sum(r["outside"] for r in rows),
    "outside_prompts": sum(r["outside"] > 0 for r in rows),
  }


def _models(args):
  """(full decoder, restricted decoder sharing its parameters, subset ids, tokenizer)."""
  from flax import nnx

  from stepcoder_jax import sampling
  from stepcoder_jax.models import gguf, output_vocab
  from stepcoder_jax.models.loading import load_model

  cfg, full, tok = load_model("tiny-llama" if args.tiny else gguf.BUNDLED_NAME)
  eos, _ = sampling.special_ids(cfg, tok)
  if args.tiny and args.vocab is None:  # a random half of the ids, plus the special ones
    rng = np.random.default_rng(0)
    pick = rng.choice(cfg.vocab_size, cfg.vocab_size // 2, replace=False).tolist()
    ids = tuple(sorted(set(pick) | set(eos) | {tok.pad_token_id}))
    rcfg = dataclasses.replace(cfg, output_vocab=ids)
  else:
    rcfg = output_vocab.apply(cfg, args.vocab or "gemma3_code", required=eos)
  graphdef, state = nnx.split(full)
  restricted = nnx.merge(graphdef, state)
  restricted.cfg = rcfg
  return full, restricted, rcfg.output_vocab, tok, eos


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--tiny", action="store_true", help="tiny random Llama, random subset (smoke)")
  p.add_argument("--vocab", default=None, help="shipped name or .npz path (default gemma3_code)")
  p.add_argument("--prompts", type=int, default=16)
  p.add_argument("--max_new_tokens", type=int, default=128)
  p.add_argument("--batch", type=int, default=8)
  args = p.parse_args(argv)
  import jax

  print(
    f"machine: cpus {os.cpu_count()}, devices {jax.devices()}, "
    f"load average {[round(x, 2) for x in os.getloadavg()]}",
    flush=True,
  )
  full, restricted, subset, tok, eos = _models(args)
  prompts = _prompt_ids(tok, args.prompts)
  print(
    f"{'tiny-llama' if args.tiny else 'gemma3-270m'}: output vocabulary {len(subset):,} of "
    f"{full.cfg.vocab_size:,} ids; {len(prompts)} prompts, batch {args.batch}, "
    f"{args.max_new_tokens} greedy tokens",
    flush=True,
  )
  runs = {}
  for name, model in (("full", full), ("restricted", restricted)):
    tokens, logp, seconds = _decode(
      model, prompts, args.batch, args.max_new_tokens, tok.pad_token_id
    )
    n = -(-len(prompts) // args.batch) * args.batch * args.max_new_tokens
    runs[name] = (tokens, logp, n / seconds)
    print(f"{name:10s} decode {n / seconds:8.1f} tok/s ({n} tokens in {seconds:.2f} s)", flush=True)
  res = compare(runs["full"][:2], runs["restricted"][:2], subset, eos)
  for i, r in enumerate(res["rows"]):
    state = "identical" if r["first_diff"] is None else f"first differs at {r['first_diff']}"
    print(
      f"prompt {i:2d}: {r['span']:4d} tokens compared, {state}, max |dlogp| over the "
      f"agreeing prefix {r['gap_max']:.2e}, full-vocabulary tokens outside {r['outside']}"
    )
  ratio = runs["restricted"][2] / runs["full"][2]
  print(f"greedy identical on {res['identical']} of {len(prompts)} prompts")
  print(
    f"log-prob |difference| over agreeing prefixes: max {res['gap_max']:.3e}, "
    f"mean {res['gap_mean']:.3e}"
  )
  print(
    f"full-vocabulary greedy tokens outside the subset: {res['outside']} "
    f"(in {res['outside_prompts']} prompts)"
  )
  print(f"load average at end {[round(x, 2) for x in os.getloadavg()]}")
  print(f"decode tok/s restricted / full: {ratio:.2f}x")
  return 0


if __name__ == "__main__":
  sys.exit(main())
