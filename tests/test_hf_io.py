"""Hugging Face import/export: round trip through transformers, sharding, and bad input."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from stepcoder_jax import cli
from stepcoder_jax.errors import UserError
from stepcoder_jax.models import hf_io
from test_models_parity import hf_logits, make_hf_model, our_logits, padded_batch

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("src_llama")
  model = make_hf_model("llama", path, seed=3)
  return path, model


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_import_export_reload_gives_same_logits(family, tmp_path):
  src = tmp_path / "src"
  model = make_hf_model(family, src, seed=7)
  cfg, decoder = hf_io.load(src)
  # Sharded for one family, to cover the index path both ways.
  max_shard = 60_000 if family == "gemma3" else hf_io.MAX_SHARD_BYTES
  out = hf_io.export(cfg, decoder, None, tmp_path / "out", max_shard_bytes=max_shard)
  shards = sorted(p.name for p in out.glob("*.safetensors"))
  if family == "gemma3":
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
  else:
    assert shards == ["model.safetensors"]
  gen = json.loads((out / "generation_config.json").read_text())
  assert gen["eos_token_id"] == 2

  tokens, mask = padded_batch(seed=4)
  real = mask.astype(bool)
  want = hf_logits(model, tokens, mask)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(
    str(out), dtype=torch.float32, attn_implementation="eager"
  ).eval()
  assert type(reloaded) is type(model)
  np.testing.assert_allclose(hf_logits(reloaded, tokens, mask)[real], want[real], atol=1e-5)
  # And our loader reads our own export (sharded or not) to the same logits.
  _, again = hf_io.load(out)
  np.testing.assert_allclose(our_logits(again, tokens, mask)[real], want[real], atol=1e-4)


def test_export_with_tokenizer_and_bf16(llama_dir, tmp_path):
  from stepcoder_jax.models.tokenizer import tiny_tokenizer

  src, _ = llama_dir
  cfg, decoder = hf_io.load(src)
  out = hf_io.export(cfg, decoder, tiny_tokenizer(), tmp_path / "out", dtype="bfloat16")
  tok = transformers.AutoTokenizer.from_pretrained(str(out))
  assert tok("def f(x):")["input_ids"] == tiny_tokenizer()("def f(x):")["input_ids"]
  assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
  model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
  assert next(model.parameters()).dtype == torch.bfloat16
  cfg2, dec2 = hf_io.load(out)
  assert cfg2.param_dtype == "bfloat16" and dec2.embed[...].dtype.name == "bfloat16"


def test_cli_export_roundtrip(llama_dir, tmp_path, capsys):
  src, model = llama_dir
  out = tmp_path / "cli_out"
  rc = cli.main(["export", "--model", str(src), "--out", str(out), "--max_shard_size", "50KB"])
  assert rc == 0, capsys.readouterr().err
  shards = list(out.glob("model-*-of-*.safetensors"))
  assert len(shards) > 1
  umask = os.umask(0)
  os.umask(umask)
  for f in [*shards, out / "config.json"]:  # weights get the mode of every other new file
    assert f.stat().st_mode & 0o777 == 0o666 & ~umask, (f, oct(f.stat().st_mode))
  card = (out / "README.md").read_text()  # a model from elsewhere: its path is the base model
  assert f"**Base model**: {src}" in card and "licence of the base model" in card
  tokens, mask = padded_batch(seed=5)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
  real = mask.astype(bool)
  np.testing.assert_allclose(
    hf_logits(reloaded, tokens, mask)[real], hf_logits(model, tokens, mask)[real], atol=1e-5
  )


def test_cli_push_to_hub_offline_is_one_line(llama_dir, tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  import huggingface_hub.constants

  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
  src, _ = llama_dir
  rc = cli.main(
    ["export", "--model", str(src), "--out", str(tmp_path / "o"), "--push_to_hub", "someone/tiny"]
  )
  err = capsys.readouterr().err.strip()
  assert rc == 2
  assert len(err.splitlines()) == 1 and "someone/tiny" in err and "Traceback" not in err
  assert (tmp_path / "o" / "config.json").is_file()  # the local export still happened


# ---------------------------------------------------------------------------------------------
# Bad input: each case corrupts a copy of a good directory; the error names file and tensor.


def _copy(src, dst):
  shutil.copytree(src, dst)
  return dst


def _rewrite_tensors(path, change):
  f = path / "model.safetensors"
  tensors = load_file(str(f))
  change(tensors)
  save_file(tensors, str(f), metadata={"format": "pt"})


def _missing_config(p):
  (p / "config.json").unlink()
  return "config.json", "missing"


def _unsupported_type(p):
  d = json.loads((p / "config.json").read_text())
  d["model_type"] = "gpt2"
  (p / "config.json").write_text(json.dumps(d))
  return "config.json", "gpt2"


def _wrong_shape(p):
  name = "model.layers.1.mlp.up_proj.weight"
  _rewrite_tensors(p, lambda t: t.__setitem__(name, np.zeros((100, 64), np.float32)))
  return "model.safetensors", name


def _missing_tensor(p):
  name = "model.layers.0.self_attn.k_proj.weight"
  _rewrite_tensors(p, lambda t: t.pop(name))
  return "model.safetensors", name


def _truncated(p):
  f = p / "model.safetensors"
  data = f.read_bytes()
  f.write_bytes(data[: len(data) - 1000])
  # The first tensor (in file order) that no longer fits is the one to name.
  n = int.from_bytes(data[:8], "little")
  header = json.loads(data[8 : 8 + n])
  header.pop("__metadata__", None)
  remaining = len(data) - 1000 - 8 - n
  cut = [k for k in header if header[k]["data_offsets"][1] > remaining]
  first = min(cut, key=lambda k: header[k]["data_offsets"][1])
  return "model.safetensors", first


BAD = {
  "missing_config": _missing_config,
  "unsupported_model_type": _unsupported_type,
  "wrong_shape": _wrong_shape,
  "missing_tensor": _missing_tensor,
  "truncated": _truncated,
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_raises_user_error_naming_file_and_tensor(case, llama_dir, tmp_path):
  p = _copy(llama_dir[0], tmp_path / case)
  fname, detail = BAD[case](p)
  with pytest.raises(UserError) as e:
    hf_io.load(p)
  msg = str(e.value)
  assert "\n" not in msg and fname in msg and detail in msg, msg


@pytest.mark.parametrize("case", ["truncated", "wrong_shape"])
def test_cli_bad_input_exits_2_with_one_line(case, llama_dir, tmp_path, capsys):
  p = _copy(llama_dir[0], tmp_path / case)
  fname, detail = BAD[case](p)
  rc = cli.main(["export", "--model", str(p), "--out", str(tmp_path / "out")])
  err = capsys.readouterr().err.strip()
  assert rc == 2
  assert len(err.splitlines()) == 1 and fname in err and detail in err, err


def test_truncated_sharded_file_names_the_shard(llama_dir, tmp_path):
  cfg, decoder = hf_io.load(llama_dir[0])
  out = hf_io.export(cfg, decoder, None, tmp_path / "sharded", max_shard_bytes=50_000)
  index = json.loads((out / "model.safetensors.index.json").read_text())
  shard = sorted(set(index["weight_map"].values()))[1]
  data = (out / shard).read_bytes()
  (out / shard).write_bytes(data[:-10])
  with pytest.raises(UserError, match=shard):
    hf_io.load(out)
  (out / shard).unlink()
  with pytest.raises(UserError, match=f"{shard}.*missing"):
    hf_io.load(out)


def test_import_path_needs_no_torch(llama_dir):
  """hf_io.load reads safetensors with numpy: torch and transformers are never imported."""
  import subprocess
  import sys

  code = (
    "import sys; from stepcoder_jax.models import hf_io; "
    f"cfg, m = hf_io.load({str(llama_dir[0])!r}); "
    "bad = [k for k in ('torch', 'transformers') if k in sys.modules]; "
    "print(cfg.family, bad)"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "llama []"


# Legacy (transformers 4.x) spellings, as in the config.json files of released checkpoints.
LEGACY = {
  "gemma3": {
    "architectures": ["Gemma3ForCausalLM"],
    "model_type": "gemma3_text",
    "vocab_size": 262144,
    "hidden_size": 640,
    "intermediate_size": 2048,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "hidden_activation": "gelu_pytorch_tanh",
    "query_pre_attn_scalar": 256,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "rope_local_base_freq": 10000.0,
    "rope_scaling": None,
    "sliding_window": 512,
    "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
    "max_position_embeddings": 32768,
    "bos_token_id": 2,
    "eos_token_id": 1,
    "pad_token_id": 0,
    "torch_dtype": "bfloat16",
    "attn_logit_softcapping": None,
    "final_logit_softcapping": None,
  },
  "llama": {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 1000,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "rope_scaling": {
      "rope_type": "llama3",
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192,
    },
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128009],
    "torch_dtype": "bfloat16",
  },
  "qwen2": {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "vocab_size": 1000,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "use_sliding_window": False,
    "max_window_layers": 21,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-6,
    "eos_token_id": 151643,
    "torch_dtype": "bfloat16",
  },
}


@pytest.mark.parametrize("family", sorted(LEGACY))
def test_legacy_config_spelling_parses_like_transformers(family, tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(LEGACY[family]))
  ours = hf_io.read_config(tmp_path)
  theirs = transformers.AutoConfig.from_pretrained(str(tmp_path))
  rp = theirs.rope_parameters
  assert ours.family == family and ours.param_dtype == "bfloat16"
  assert ours.head_dim == (
    getattr(theirs, "head_dim", None) or theirs.hidden_size // theirs.num_attention_heads
  )
  if family == "gemma3":
    assert ours.rope_theta == rp["full_attention"]["rope_theta"] == 1e6
    assert ours.rope_local_theta == rp["sliding_attention"]["rope_theta"] == 1e4
    assert ours.layer_types == tuple(theirs.layer_types) and ours.sliding_window == 512
    assert ours.tie_embeddings and ours.query_pre_attn_scalar == 256
  else:
    assert ours.rope_theta == rp["rope_theta"]
    assert ours.sliding_window is None
  if family == "llama":
    assert ours.rope_scaling_dict()["factor"] == rp["factor"] == 8.0
    assert ours.eos_ids == (128001, 128009) and not ours.tie_embeddings
  # And our export spelling reads back identically.
  assert hf_io.config_from_hf(hf_io.config_to_hf(ours)) == ours


def test_multimodal_gemma3_dir_loads_its_text_decoder(tmp_path):
  """model_type 'gemma3' (Gemma 3 4B+): text_config + tensors under model.language_model."""
  src = tmp_path / "text"
  model = make_hf_model("gemma3", src, seed=11)
  mm = tmp_path / "mm"
  mm.mkdir()
  text_cfg = json.loads((src / "config.json").read_text())
  (mm / "config.json").write_text(
    json.dumps(
      {
        "model_type": "gemma3",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "text_config": text_cfg,
        "vision_config": {"model_type": "siglip_vision_model"},
      }
    )
  )
  tensors = load_file(str(src / "model.safetensors"))
  renamed = {
    k.replace("model.", "model.language_model.", 1): v
    for k, v in tensors.items()
    if k.startswith("model.")
  }
  renamed["model.vision_tower.dummy"] = np.zeros(3, np.float32)
  save_file(renamed, str(mm / "model.safetensors"), metadata={"format": "pt"})
  cfg, decoder = hf_io.load(mm)
  assert cfg.family == "gemma3" and cfg.tie_embeddings
  tokens, mask = padded_batch(seed=6)
  real = mask.astype(bool)
  np.testing.assert_allclose(
    our_logits(decoder, tokens, mask)[real], hf_logits(model, tokens, mask)[real], atol=1e-4
  )
