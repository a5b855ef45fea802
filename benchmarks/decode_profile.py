"""Where a decode step of the sampler goes: the whole sampler at two lengths (the slope is one
decode step, the rest the prefill), then the pieces of one step jitted alone, then the compiled
sampler's decode loop read for copies of KV-cache buffers (each is a full read and write of a
layer's key or value buffer on every step).

  python benchmarks/decode_profile.py                       # Gemma 3 270M, 16 rows, 256 + 32
  python benchmarks/decode_profile.py --model tiny-gemma3 --rows 4 --prompt 64

Timings are the best of a few runs; on a shared machine they are indicative only.
"""

from __future__ import annotations

import argparse
import re
import time


def _best(f, *a, reps: int = 3) -> float:
  import jax

  jax.block_until_ready(f(*a))
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(f(*a))
    best = min(best, time.perf_counter() - t)
  return best


def _computations(hlo: str) -> dict[str, list[str]]:
  comps: dict[str, list[str]] = {}
  name = None
  for line in hlo.splitlines():
    m = re.match(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s+\(.*\)\s+->.*\{\s*$", line)
    if m:
      name = m.group(1)
      comps[name] = []
    elif name is not None:
      comps[name].append(line)
  return comps


def loop_copies(hlo: str, shape: str) -> int:
  """Copies of `shape` buffers (e.g. 'f32[16,288,1,256]') made inside the decode loop: the
  largest while body and everything it calls (fusions included)."""
  comps = _computations(hlo)
  bodies = [
    b for lines in comps.values() for ln in lines for b in re.findall(r"body=%?([\w.\-]+)", ln)
  ]
  if not bodies:
    return 0
  seen, todo = set(), [max(bodies, key=lambda b: len(comps.get(b, [])))]
  while todo:
    c = todo.pop()
    if c in seen or c not in comps:
      continue
    seen.add(c)
    for ln in comps[c]:
      todo += re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", ln)
  return sum(" copy(" in ln and f"{shape}{{" in ln for c in seen for ln in comps[c])


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="gemma3-270m")
  p.add_argument("--rows", type=int, default=16)
  p.add_argument("--prompt", type=int, default=256, help="prompt bucket (rows are this long)")
  p.add_argument("--new", type=int, default=32, help="new tokens (no EOS: every row decodes)")
  p.add_argument("--output_vocab", default="gemma3_code", help="'none' for the full vocabulary")
  args = p.parse_args(argv)

  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from stepcoder_jax import sampling
  from stepcoder_jax.models import loading, output_vocab
  from stepcoder_jax.models.config import SamplingConfig
  from stepcoder_jax.models.decoder import left_pad_positions

  cfg, model, _ = loading.load_model(args.model)
  if args.output_vocab != "none" and cfg.is_gemma and not args.model.startswith("tiny-"):
    model.cfg = cfg = output_vocab.apply(cfg, args.output_vocab, required=cfg.eos_ids)
  gd, state = nnx.split(model)
  b, n = args.rows, args.new
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(10, min(1000, cfg.vocab_size), args.prompt)) for _ in range(b)]
  tokens, mask = sampling.pad_prompts(prompts, 0, args.prompt)
  key = jax.random.key(0)
  print(f"{args.model}: {b} rows, prompt {tokens.shape[1]}, {n} new tokens, {jax.devices()[0]}")

  for greedy in (False, True):
    scfg = SamplingConfig(temperature=0.0 if greedy else 1.0, max_new_tokens=n)
    fn = sampling.make_sampler(gd, scfg, (), 0)

    def run(k, fn=fn):
      return fn(state, tokens, mask, key, k).tokens

    full, half = _best(run, n), _best(run, n // 2)
    step = (full - half) / (n - n // 2)
    print(
      f"sampler ({'greedy' if greedy else 'temperature 1'}): {full:.3f} s for {n} tokens; "
      f"one decode step {1e3 * step:.1f} ms; prefill and the rest {full - n * step:.3f} s"
    )

  # One decode step's pieces, each jitted alone.
  slots = tokens.shape[1] + sampling.bucket(n)
  cache = model.init_cache(b, slots)
  prefill = jax.jit(lambda s, c: nnx.merge(gd, s)(tokens, left_pad_positions(mask), mask, c))
  _, cache = prefill(state, cache)
  one = (jnp.full((b, 1), 5, jnp.int32), jnp.full((b, 1), tokens.shape[1], jnp.int32))
  blocks = jax.jit(lambda s, c: nnx.merge(gd, s)(one[0], one[1], jnp.ones((b, 1), bool), c)[0])
  head = jax.jit(lambda s, h: nnx.merge(gd, s).logits(h[:, 0]))
  rows = jax.jit(lambda s: nnx.merge(gd, s).output_head()[0])
  on_rows = jax.jit(
    lambda w, h: jnp.einsum("bd,vd->bv", h[:, 0], w, preferred_element_type=jnp.float32)
  )
  scfg = SamplingConfig(temperature=1.0, max_new_tokens=n)

  @jax.jit
  def draw(logits, k):
    col = sampling.draw(logits, k, scfg)
    return col, jnp.take_along_axis(jax.nn.log_softmax(logits, -1), col[:, None], -1)

  h = blocks(state, cache)
  logits = head(state, h)
  w = rows(state)
  print(f"  blocks, one token over {slots} cache slots: {1e3 * _best(blocks, state, cache):.1f} ms")
  print(f"  output projection with its row gather: {1e3 * _best(head, state, h):.1f} ms")
  print(f"  the row gather alone: {1e3 * _best(rows, state):.1f} ms")
  print(f"  output projection on gathered rows: {1e3 * _best(on_rows, w, h):.1f} ms")
  print(f"  draw + log-softmax over {logits.shape[-1]}: {1e3 * _best(draw, logits, key):.1f} ms")

  run = jax.jit(sampling.sample_fn(gd, scfg, (), 0))
  knobs = (jnp.int32(n), jnp.float32(1.0), jnp.float32(1.0))
  hlo = run.lower(state, tokens, mask, key, *knobs).compile().as_text()
  dt = "f32" if cfg.dtype == "float32" else "bf16"
  # Keys are [B, Hkv, Dh, S], values [B, S, Hkv, Dh]; a copy (or transpose) into either shape is
  # a full pass over a layer's cache buffer.
  for dims in sorted({cache.keys[0].shape, cache.values[0].shape}):
    shape = f"{dt}[{','.join(map(str, dims))}]"
    print(f"  copies into {shape} (cache-sized) per decode step: {loop_copies(hlo, shape)}")


if __name__ == "__main__":
  main()
