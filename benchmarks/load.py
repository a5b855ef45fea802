"""Load time of the bundled Gemma 3 270M: our cached load against transformers reading the GGUF.

Our first load converts the GGUF once into the cache ($STEPCODER_JAX_CACHE); every later load reads
the cached safetensors (target: under 10 s). The peer is transformers' own GGUF reader, which
dequantizes the file on every load. Both are timed in this run, after one untimed load each.

  python benchmarks/load.py
"""

import time


def main() -> None:
  import torch
  import transformers

  from stepcoder_jax.models import gguf
  from stepcoder_jax.models.loading import load_model

  load_model(gguf.BUNDLED_NAME)  # fills the cache when empty (not timed)
  t = time.perf_counter()
  load_model(gguf.BUNDLED_NAME)
  ours = time.perf_counter() - t

  path, _ = gguf.bundled_gguf_path()

  def peer():
    return transformers.AutoModelForCausalLM.from_pretrained(
      str(path.parent), gguf_file=path.name, dtype=torch.float32
    )

  peer()
  t = time.perf_counter()
  peer()
  theirs = time.perf_counter() - t
  print(
    f"Gemma 3 270M load: ours (cached) {ours:.2f} s, transformers GGUF {theirs:.2f} s, "
    f"ratio {theirs / ours:.2f}x (target: ours < 10 s)"
  )


if __name__ == "__main__":
  main()
