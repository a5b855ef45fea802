"""GGUF -> cached HF directory -> our decoder, on a tiny Llama GGUF written here with `gguf`.

The file is written the way llama.cpp lays out a Llama (q/k rows permuted, byte-level BPE
vocabulary with merges), so transformers' own GGUF reader is the reference on both sides.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from stepcoder_jax import sampling
from stepcoder_jax.errors import UserError
from stepcoder_jax.models import gguf as gguf_lib
from stepcoder_jax.models.config import SamplingConfig
from stepcoder_jax.models.loading import load_model
from stepcoder_jax.models.tokenizer import tiny_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

HEADS, KV_HEADS, HIDDEN, LAYERS = 4, 2, 64, 2
PROMPTS = ["def add(a, b):\n    return", "while x"]


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp's q/k row order (interleaved rotary halves); transformers undoes it on read."""
  return (
    w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
  )


def write_tiny_llama_gguf(path, seed: int = 0) -> None:
  tok = tiny_tokenizer()
  vocab = len(tok)
  rng = np.random.default_rng(seed)

  def mat(out_dim, in_dim):
    return (rng.standard_normal((out_dim, in_dim)) / in_dim**0.5).astype(np.float32)

  head_dim = HIDDEN // HEADS
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_name("tiny-llama")
  w.add_context_length(256)
  w.add_embedding_length(HIDDEN)
  w.add_block_count(LAYERS)
  w.add_feed_forward_length(128)
  w.add_head_count(HEADS)
  w.add_head_count_kv(KV_HEADS)
  w.add_rope_dimension_count(head_dim)
  w.add_rope_freq_base(10000.0)
  w.add_layer_norm_rms_eps(1e-6)
  w.add_file_type(gguf.LlamaFileType.ALL_F32)
  w.add_tokenizer_model("gpt2")
  inv = {i: t for t, i in tok.get_vocab().items()}
  w.add_token_list([inv[i] for i in range(vocab)])
  w.add_token_types(
    [gguf.TokenType.CONTROL if i < 3 else gguf.TokenType.NORMAL for i in range(vocab)]
  )
  merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
  w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
  w.add_bos_token_id(tok.bos_token_id)
  w.add_eos_token_id(tok.eos_token_id)
  w.add_pad_token_id(tok.pad_token_id)
  w.add_add_bos_token(False)
  w.add_tensor("token_embd.weight", mat(vocab, HIDDEN))
  w.add_tensor("output_norm.weight", (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))
  w.add_tensor("output.weight", mat(vocab, HIDDEN))
  for i in range(LAYERS):
    p = f"blk.{i}."
    w.add_tensor(p + "attn_norm.weight", np.ones(HIDDEN, np.float32))
    w.add_tensor(p + "attn_q.weight", _permute(mat(HEADS * head_dim, HIDDEN), HEADS))
    w.add_tensor(p + "attn_k.weight", _permute(mat(KV_HEADS * head_dim, HIDDEN), KV_HEADS))
    w.add_tensor(p + "attn_v.weight", mat(KV_HEADS * head_dim, HIDDEN))
    w.add_tensor(p + "attn_output.weight", mat(HIDDEN, HEADS * head_dim))
    w.add_tensor(p + "ffn_norm.weight", np.ones(HIDDEN, np.float32))
    w.add_tensor(p + "ffn_gate.weight", mat(128, HIDDEN))
    w.add_tensor(p + "ffn_up.weight", mat(128, HIDDEN))
    w.add_tensor(p + "ffn_down.weight", mat(HIDDEN, 128))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
  root = tmp_path / "cache"
  monkeypatch.setenv("STEPCODER_JAX_CACHE", str(root))
  return root


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
  path = tmp_path_factory.mktemp("gguf") / "tiny-llama-f32.gguf"
  write_tiny_llama_gguf(path)
  return path


def _entries(root):
  """Cache entries (converted directories or leftovers), not the lock files that stay beside them
  by design (stepcoder_jax/cache.py: deleting a lock file would let two holders coexist)."""
  d = root / "gguf"
  return sorted(p.name for p in d.iterdir() if p.suffix != ".lock") if d.is_dir() else []


def test_gguf_converts_once_and_matches_transformers(tiny_gguf, cache):
  assert gguf_lib.cache_root() == cache  # STEPCODER_JAX_CACHE is honoured
  cfg, decoder, tok = load_model(tiny_gguf)
  assert cfg.family == "llama" and cfg.num_layers == LAYERS and not cfg.tie_embeddings
  (entry,) = _entries(cache)
  assert not entry.startswith(".tmp")
  hf_dir = cache / "gguf" / entry
  assert json.loads((hf_dir / "config.json").read_text()).get("quantization_config") is None
  stamp = (hf_dir / "model.safetensors").stat().st_mtime_ns

  ref_tok = transformers.AutoTokenizer.from_pretrained(
    str(tiny_gguf.parent), gguf_file=tiny_gguf.name
  )
  ref = transformers.AutoModelForCausalLM.from_pretrained(
    str(tiny_gguf.parent), gguf_file=tiny_gguf.name, dtype=torch.float32
  ).eval()
  ids = [ref_tok(p)["input_ids"] for p in PROMPTS]
  assert ids == [tok(p)["input_ids"] for p in PROMPTS]
  n = 12
  out = sampling.generate_ids(
    decoder, ids, SamplingConfig(max_new_tokens=n), jax.random.key(0), (), tok.pad_token_id
  )
  for i, row in enumerate(ids):
    with torch.no_grad():
      want = ref.generate(
        torch.tensor([row]),
        do_sample=False,
        max_new_tokens=n,
        min_new_tokens=n,
        eos_token_id=None,
        pad_token_id=tok.pad_token_id,
      )
    assert out.tokens[i].tolist() == want[0, len(row) :].tolist()

  # Second load: same entry, not rewritten.
  cfg2, _, _ = load_model(tiny_gguf)
  assert cfg2 == cfg and _entries(cache) == [entry]
  assert (hf_dir / "model.safetensors").stat().st_mtime_ns == stamp


def test_damaged_gguf_is_a_user_error_and_leaves_no_cache(tmp_path, cache):
  bad = tmp_path / "broken.gguf"
  bad.write_bytes(b"GGUF" + b"\x00" * 64)
  with pytest.raises(UserError, match="broken.gguf"):
    load_model(bad)
  assert _entries(cache) == []  # the half-written temp dir was removed


def test_not_a_gguf_file(tmp_path):
  f = tmp_path / "weights.bin"
  f.write_bytes(b"x")
  with pytest.raises(UserError, match="not a .gguf file"):
    load_model(f)
