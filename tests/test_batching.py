import numpy as np
import pytest

from stepcoder_jax.errors import UserError
from stepcoder_jax.rl import batching


def test_bucket_is_power_of_two_with_cap():
  assert batching.bucket(1) == 8
  assert batching.bucket(9) == 16
  assert batching.bucket(16) == 16
  assert batching.bucket(300, maximum=256) == 256


def test_pack_left_pads_prompt_and_right_pads_response():
  b = batching.pack([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], pad_id=0)
  p = 8  # bucket(3)
  assert b["tokens"].shape == (2, p + 8)
  np.testing.assert_array_equal(b["tokens"][0, p - 3 : p + 2], [5, 6, 7, 1, 2])
  np.testing.assert_array_equal(b["tokens"][1, p - 1 : p + 3], [8, 3, 4, 9])
  # positions count real tokens from 0 across prompt and response
  np.testing.assert_array_equal(b["positions"][0, p - 3 : p + 2], [0, 1, 2, 3, 4])
  np.testing.assert_array_equal(b["positions"][1, p - 1 : p + 3], [0, 1, 2, 3])
  assert b["attention_mask"][0].sum() == 5 and b["attention_mask"][1].sum() == 4
  # the response mask never covers the prompt
  assert b["response_mask"][:, :p].sum() == 0
  assert b["response_mask"][0].sum() == 2 and b["response_mask"][1].sum() == 3


def test_place_response_values_and_too_long_prompt():
  v = batching.place_response_values([np.array([1, 0, 1])], batch_len=12, prompt_len=8)
  np.testing.assert_array_equal(v[0, 8:11], [1, 0, 1])
  with pytest.raises(UserError, match="prompt 0 has 9 tokens"):
    batching.pack([list(range(9))], [[1]], pad_id=0, prompt_len=8)


def test_cut_response_stops_at_eos_and_stop_strings_including_across_the_prompt():
  from stepcoder_jax.models.tokenizer import tiny_tokenizer
  from stepcoder_jax import completion

  tok = tiny_tokenizer()
  ids = tok("    return x\n```\nmore", add_special_tokens=False)["input_ids"]
  c = completion.cut(tok, ids, ("\n```",), (tok.eos_token_id,))
  kept, text, offs = c.ids, c.text, c.offsets
  assert c.finish == "stop"
  assert text == "    return x"
  assert tok.decode(kept).startswith("    return x\n```") and len(kept) < len(ids)
  assert len(offs) == len(kept)
  # a prompt ending in a newline, then the closing fence at once: an empty answer
  ids = tok("```\nprint(1)", add_special_tokens=False)["input_ids"]
  c = completion.cut(tok, ids, ("\n```",), (), context="def f(x):\n")
  kept, text = c.ids, c.text
  assert text == "" and tok.decode(kept).startswith("```") and len(kept) < len(ids)
  ids = tok("    return 1", add_special_tokens=False)["input_ids"] + [tok.eos_token_id, 5, 6]
  c = completion.cut(tok, ids, ("\n```",), (tok.eos_token_id,))
  kept, text = c.ids, c.text
  assert c.finish == "eos"
  assert kept[-1] == tok.eos_token_id and text == "    return 1"
