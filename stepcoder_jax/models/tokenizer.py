"""Tokenizers: load a real one (HF directory or GGUF file), or build a tiny offline one.

The tiny tokenizer is a byte-level BPE trained in-process on a small built-in corpus of Python
code, so tests and tiny configs need no download. Byte-level means every string round-trips and
offsets are exact character offsets, which FGO (tokens -> source lines) and CCCS (prefix split)
rely on. Training is deterministic (single-threaded, fixed corpus), so ids are stable across runs.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from stepcoder_jax.errors import UserError

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
TINY_VOCAB_SIZE = 384

# A small corpus of ordinary Python: enough merges for indentation, keywords and common names.
_CORPUS = r'''
def add(a, b):
    return a + b


def solve():
    n = int(input())
    values = list(map(int, input().split()))
    total = 0
    for v in values:
        if v % 2 == 0:
            total += v
        else:
            total -= v
    print(total)


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        if not self.items:
            raise IndexError("pop from empty stack")
        return self.items.pop()


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def is_prime(n):
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def count_words(text):
    counts = {}
    for word in text.split():
        word = word.lower()
        counts[word] = counts.get(word, 0) + 1
    return counts


def binary_search(arr, target):
    lo, hi = 0, len(arr) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if arr[mid] == target:
            return mid
        elif arr[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1


def main():
    t = int(input())
    for _ in range(t):
        s = input().strip()
        try:
            x = int(s)
        except ValueError:
            print("invalid")
            continue
        print(x * x)


if __name__ == "__main__":
    main()
'''


@functools.lru_cache(maxsize=1)
def tiny_tokenizer():
  """A deterministic byte-level BPE (~384 tokens) as a `PreTrainedTokenizerFast`.

  Special tokens: `<pad>`=0, `<bos>`=1, `<eos>`=2. No special token is added on encode, so token
  offsets map 1:1 onto the text (a caller wanting BOS prepends `bos_token_id`).
  Cached per process: the same object is returned on every call.
  """
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # deterministic, and no fork warning
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  from transformers import PreTrainedTokenizerFast

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  trainer = trainers.BpeTrainer(
    vocab_size=TINY_VOCAB_SIZE,
    min_frequency=2,
    show_progress=False,
    special_tokens=[PAD, BOS, EOS],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
  )
  tok.train_from_iterator(_CORPUS.split("\n\n\n"), trainer=trainer)
  return PreTrainedTokenizerFast(
    tokenizer_object=tok,
    pad_token=PAD,
    bos_token=BOS,
    eos_token=EOS,
    padding_side="left",
    clean_up_tokenization_spaces=False,
  )


_SPECIAL_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token")


def _fast_from_json(d: Path):
  """tokenizer.json straight into PreTrainedTokenizerFast, special tokens from tokenizer_config.

  About 3x faster than AutoTokenizer for Gemma's 262k vocabulary (which parses the JSON in Python
  and rebuilds the tokenizer); same ids and offsets for directories written by gguf.convert.
  """
  import json

  from transformers import PreTrainedTokenizerFast

  conf = json.loads((d / "tokenizer_config.json").read_text())
  special = {k: conf[k] for k in _SPECIAL_KEYS if isinstance(conf.get(k), str)}
  return PreTrainedTokenizerFast(
    tokenizer_file=str(d / "tokenizer.json"), clean_up_tokenization_spaces=False, **special
  )


def load_tokenizer(path: str | os.PathLike, *, fast: bool = False):
  """Load a tokenizer from an HF directory or a `.gguf` file (through transformers).

  Padding is set to the left (the sampler's layout) and a missing pad token falls back to EOS.
  Raises UserError with a one-line message if the path holds no usable tokenizer.

  Args:
    path: HF directory or .gguf file.
    fast: read tokenizer.json directly (see `_fast_from_json`); only for directories whose
      tokenizer is fully described by tokenizer.json, such as our GGUF cache.
  """
  from transformers import AutoTokenizer

  p = Path(path)
  if not p.exists():
    raise UserError(f"{p}: no such file or directory (expected an HF model dir or a .gguf file)")
  try:
    if fast and p.is_dir() and (p / "tokenizer.json").is_file():
      tok = _fast_from_json(p)
    elif p.is_file() and p.suffix == ".gguf":
      tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    elif p.is_dir():
      tok = AutoTokenizer.from_pretrained(str(p))
    else:
      raise UserError(f"{p}: not a model directory or a .gguf file")
  except UserError:
    raise
  except Exception as e:  # transformers raises many kinds; the user needs one line
    msg = " ".join(str(e).split())[:300]
    raise UserError(f"{p}: cannot load tokenizer: {type(e).__name__}: {msg}") from None
  tok.padding_side = "left"
  if tok.pad_token_id is None:
    tok.pad_token = tok.eos_token
  return tok
