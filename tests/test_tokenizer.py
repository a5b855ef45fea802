"""The tiny offline tokenizer and `load_tokenizer`."""

import pytest

from stepcoder_jax.errors import UserError
from stepcoder_jax.models import tokenizer as tokenizer_lib

CODE = "def f(x):\n    if x > 1:\n        return x * 2  # é\n    return 0\n"


def test_tiny_tokenizer_special_ids_and_size():
  tok = tokenizer_lib.tiny_tokenizer()
  assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
  assert 300 <= len(tok) <= 512
  assert tok.padding_side == "left"


def test_tiny_tokenizer_is_cached_and_deterministic():
  tok = tokenizer_lib.tiny_tokenizer()
  assert tokenizer_lib.tiny_tokenizer() is tok
  ids = tok(CODE)["input_ids"]
  # Compression: the BPE learned merges (fewer tokens than bytes).
  assert len(ids) < len(CODE.encode()) * 0.7
  tokenizer_lib.tiny_tokenizer.cache_clear()
  try:
    assert tokenizer_lib.tiny_tokenizer()(CODE)["input_ids"] == ids
  finally:
    tokenizer_lib.tiny_tokenizer.cache_clear()


def test_roundtrip_and_char_offsets():
  tok = tokenizer_lib.tiny_tokenizer()
  enc = tok(CODE, return_offsets_mapping=True)
  assert tok.decode(enc["input_ids"]) == CODE
  offsets = enc["offset_mapping"]
  assert offsets[0][0] == 0 and offsets[-1][1] == len(CODE)
  # Offsets are character offsets: each token starts where the previous ended, or shares the
  # previous token's character (a multi-byte character split across byte-level tokens).
  for (a0, b0), (a1, b1) in zip(offsets, offsets[1:]):
    assert a1 == b0 or (a1, b1) == (a0, b0)
  covered = "".join(
    CODE[a:b] for i, (a, b) in enumerate(offsets) if i == 0 or (a, b) != tuple(offsets[i - 1])
  )
  assert covered == CODE


def test_left_padding_batch():
  tok = tokenizer_lib.tiny_tokenizer()
  out = tok(["x", "def foo():"], padding=True, return_tensors="np")
  assert out["input_ids"].shape[0] == 2
  assert out["attention_mask"][0, 0] == 0 and out["attention_mask"][0, -1] == 1
  assert out["input_ids"][0, 0] == tok.pad_token_id


def test_save_and_load_tokenizer(tmp_path):
  tok = tokenizer_lib.tiny_tokenizer()
  tok.save_pretrained(tmp_path)
  loaded = tokenizer_lib.load_tokenizer(tmp_path)
  assert loaded(CODE)["input_ids"] == tok(CODE)["input_ids"]
  assert loaded.eos_token_id == tok.eos_token_id
  assert loaded.padding_side == "left"


def test_load_tokenizer_bad_paths(tmp_path):
  with pytest.raises(UserError, match="no such file"):
    tokenizer_lib.load_tokenizer(tmp_path / "missing")
  with pytest.raises(UserError, match="cannot load tokenizer"):
    tokenizer_lib.load_tokenizer(tmp_path)  # an empty directory
