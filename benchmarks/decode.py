"""Decode throughput: our jitted sampler against transformers' `generate` (PyTorch, CPU).

Same weights on both sides (a transformers model saved and read back by hf_io, or the cached
Gemma 3 270M directory for both), batch 8 left-padded prompts, 128 new tokens, greedy, EOS
disabled so every row decodes all 128 tokens, float32. Each side gets one untimed warm-up (our
compile; torch's first-call setup), then one timed run. Prints tokens/s for both and the ratio.

  python benchmarks/decode.py                 # tiny Llama and Gemma 3 270M
  python benchmarks/decode.py --models tiny   # just the tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

PROMPTS = [
  "def add(a, b):\n    return",
  "import sys\n\ndef main():\n    data = sys.stdin.read().split()\n",
  "class Stack:\n    def __init__(self):\n",
  "# read n and print the sum of the first n squares\nn = int(input())\n",
  "def is_prime(n):\n",
  "for i in range(10):\n    if i % 2 == 0:\n",
  "def binary_search(arr, target):\n    lo, hi = 0, len(arr) - 1\n",
  "x = [int(t) for t in input().split()]\nprint(",
]


def _tiny_llama_dir(path: str):
  """A random tiny Llama (vocab = the tiny tokenizer's) saved by transformers."""
  import torch
  import transformers

  from stepcoder_jax.models.tokenizer import tiny_tokenizer

  tok = tiny_tokenizer()
  cfg = transformers.LlamaConfig(
    vocab_size=len(tok),
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=512,
    bos_token_id=tok.bos_token_id,
    eos_token_id=tok.eos_token_id,
    pad_token_id=tok.pad_token_id,
  )
  torch.manual_seed(0)
  transformers.LlamaForCausalLM(cfg).save_pretrained(path)
  tok.save_pretrained(path)
  return path


def _ours(path_or_name: str, batch: int, new_tokens: int) -> dict:
  import jax

  from stepcoder_jax import sampling
  from stepcoder_jax.models.config import SamplingConfig
  from stepcoder_jax.models.loading import load_model

  _, decoder, tok = load_model(path_or_name)
  prompts = (PROMPTS * batch)[:batch]
  ids = sampling.encode_prompts(tok, prompts)
  sc = SamplingConfig(max_new_tokens=new_tokens)
  run = lambda: sampling.generate_ids(decoder, ids, sc, jax.random.key(0), (), tok.pad_token_id)
  t = time.perf_counter()
  run()
  warm = time.perf_counter() - t
  t = time.perf_counter()
  out = run()
  dt = time.perf_counter() - t
  n = int(out.lengths.sum())
  return {
    "tokens": n,
    "seconds": dt,
    "tokens_per_s": n / dt,
    "warmup_s": warm,
    "first_row": out.tokens[0, :16].tolist(),
  }


def _torch(hf_dir: str, batch: int, new_tokens: int) -> dict:
  import torch
  from transformers import AutoModelForCausalLM

  from stepcoder_jax.models.tokenizer import load_tokenizer

  tok = load_tokenizer(hf_dir, fast=True)
  model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  model.generation_config.eos_token_id = None  # decode all new tokens, like ours with no EOS ids
  prompts = (PROMPTS * batch)[:batch]
  enc = tok(prompts, padding=True, return_tensors="pt")

  def run(n):
    with torch.inference_mode():
      return model.generate(
        **enc, do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=tok.pad_token_id
      )

  t = time.perf_counter()
  run(4)
  warm = time.perf_counter() - t
  t = time.perf_counter()
  out = run(new_tokens)
  dt = time.perf_counter() - t
  new = out[:, enc["input_ids"].shape[1] :]
  n = int(new.numel())
  return {
    "tokens": n,
    "seconds": dt,
    "tokens_per_s": n / dt,
    "warmup_s": warm,
    "first_row": new[0, :16].tolist(),
  }


def bench(name: str, batch: int, new_tokens: int) -> dict:
  from stepcoder_jax.models import gguf

  with tempfile.TemporaryDirectory() as tmp:
    if name == "tiny":
      hf_dir = ours_path = _tiny_llama_dir(os.path.join(tmp, "tiny"))
    elif name == "gemma":
      ours_path, hf_dir = gguf.BUNDLED_NAME, str(gguf.bundled_hf_dir())
    else:
      raise SystemExit(f"unknown model {name!r} (tiny, gemma)")
    ours = _ours(ours_path, batch, new_tokens)
    ref = _torch(hf_dir, batch, new_tokens)
  return {
    "model": name,
    "batch": batch,
    "new_tokens": new_tokens,
    "ours": ours,
    "transformers": ref,
    "ratio": ours["tokens_per_s"] / ref["tokens_per_s"],
    "same_greedy_tokens_row0": ours["first_row"] == ref["first_row"],
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="tiny,gemma", help="comma list of: tiny, gemma")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--new_tokens", type=int, default=128)
  p.add_argument("--json", default=None, help="also write the results here")
  args = p.parse_args(argv)
  import jax
  import torch

  try:
    load = os.getloadavg()
  except OSError:
    load = (float("nan"),) * 3
  machine = {
    "platform": platform.platform(),
    "cpus": os.cpu_count(),
    "jax_devices": str(jax.devices()),
    "torch_threads": torch.get_num_threads(),
    "loadavg_start": [round(x, 2) for x in load],
  }
  print(f"machine: {machine}", flush=True)
  results = []
  for name in args.models.split(","):
    r = bench(name.strip(), args.batch, args.new_tokens)
    results.append(r)
    print(
      f"{name:6s} batch={r['batch']} new={r['new_tokens']}: "
      f"ours {r['ours']['tokens_per_s']:9.1f} tok/s ({r['ours']['seconds']:.2f} s, "
      f"compile+warm-up {r['ours']['warmup_s']:.1f} s) | "
      f"transformers {r['transformers']['tokens_per_s']:9.1f} tok/s "
      f"({r['transformers']['seconds']:.2f} s) | ratio {r['ratio']:.2f}x | "
      f"same greedy tokens (row 0, first 16): {r['same_greedy_tokens_row0']}",
      flush=True,
    )
  machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
  print(f"load average at end: {machine['loadavg_end']}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"machine": machine, "results": results}, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
