"""Hugging Face bridge: a local HF directory (config.json + safetensors) <-> ModelConfig + Decoder.

Import reads tensors with the `safetensors` library (numpy), so it needs no torch. Export writes a
directory that `transformers.AutoModelForCausalLM.from_pretrained` loads: config.json, safetensors
shards (<= 5 GB each, with model.safetensors.index.json when there are several),
generation_config.json and, when a tokenizer is given, its files.

Bad input raises UserError naming the file and the tensor.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
from pathlib import Path
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stepcoder_jax.errors import UserError
from stepcoder_jax.models.config import GLOBAL, SLIDING, ModelConfig
from stepcoder_jax.models.decoder import Decoder

# HF model_type -> our family, and back.
MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "gemma3_text": "gemma3"}
HF_MODEL_TYPE = {"llama": "llama", "qwen2": "qwen2", "gemma3": "gemma3_text"}
HF_ARCHITECTURE = {
  "llama": "LlamaForCausalLM",
  "qwen2": "Qwen2ForCausalLM",
  "gemma3": "Gemma3ForCausalLM",
}
MAX_SHARD_BYTES = 5 * 10**9
_SINGLE = "model.safetensors"
_INDEX = "model.safetensors.index.json"


# ----------------------------------------------------------------------------------------------
# config.json <-> ModelConfig


def _rope_params(d: dict, family: str) -> tuple[float, float, dict | None, dict | None]:
  """(global theta, local theta, global scaling, local scaling) from old or new HF spellings.

  transformers >= 5 writes `rope_parameters` ({'rope_type', 'rope_theta', ...}, or per layer type
  for Gemma 3); older files have `rope_theta`, `rope_scaling` and Gemma's `rope_local_base_freq`.
  """
  default_theta = 1e6 if family == "gemma3" else 10000.0
  rp = d.get("rope_parameters")
  if isinstance(rp, dict) and (GLOBAL in rp or SLIDING in rp):
    glob, loc = rp.get(GLOBAL) or {}, rp.get(SLIDING) or {}
  elif isinstance(rp, dict):
    glob, loc = rp, rp
  else:
    glob = dict(d.get("rope_scaling") or {})
    glob.setdefault("rope_theta", d.get("rope_theta", default_theta))
    loc = {"rope_theta": d.get("rope_local_base_freq", 10000.0)} if family == "gemma3" else glob

  def scaling(p: dict) -> dict | None:
    kind = p.get("rope_type", p.get("type", "default"))
    if kind == "default":
      return None
    return {k: v for k, v in p.items() if k != "rope_theta"} | {"rope_type": kind}

  g_theta = float(glob.get("rope_theta", d.get("rope_theta", default_theta)))
  l_theta = float(loc.get("rope_theta", g_theta))
  return g_theta, l_theta, scaling(glob), scaling(loc)


def config_from_hf(
  d: dict, source: str = "config.json", *, dtype: str | None = None, param_dtype: str | None = None
) -> ModelConfig:
  """Our ModelConfig from the dict of an HF config.json (`source` names it in errors).

  A multimodal Gemma 3 config (model_type 'gemma3', e.g. Gemma 3 4B) yields its text decoder.
  """
  if d.get("model_type") == "gemma3" and isinstance(d.get("text_config"), dict):
    text = {
      "tie_word_embeddings": d.get("tie_word_embeddings", True),
      "torch_dtype": d.get("torch_dtype"),
      "dtype": d.get("dtype"),
    }
    d = text | d["text_config"] | {"model_type": "gemma3_text"}
  model_type = d.get("model_type")
  if model_type not in MODEL_TYPES:
    raise UserError(
      f"{source}: model_type {model_type!r} is not supported "
      f"(supported: {', '.join(sorted(MODEL_TYPES))})"
    )
  family = MODEL_TYPES[model_type]
  try:
    g_theta, l_theta, g_scale, l_scale = _rope_params(d, family)
    for s in (g_scale, l_scale):
      kind = s and s["rope_type"]
      if kind and kind not in ("linear", "llama3"):
        raise UserError(f"{source}: rope type {kind!r} is not supported (linear, llama3)")
    if family != "gemma3" and l_scale != g_scale:
      raise UserError(
        f"{source}: rope_parameters: different local/global scaling is only supported for gemma3"
      )
    if family == "gemma3" and l_scale:
      raise UserError(
        f"{source}: rope_parameters.sliding_attention: scaling of local layers is not supported"
      )
    heads = int(d["num_attention_heads"])
    hidden = int(d["hidden_size"])
    num_layers = int(d["num_hidden_layers"])
    window = d.get("sliding_window")
    layer_types = d.get("layer_types")
    if family == "qwen2" and not d.get("use_sliding_window", False):
      window, layer_types = None, None
    if family == "llama":
      window, layer_types = None, None
    if family == "gemma3" and layer_types is None:
      pattern = int(d.get("sliding_window_pattern", d.get("_sliding_window_pattern", 6)))
      layer_types = [SLIDING if (i + 1) % pattern else GLOBAL for i in range(num_layers)]
    if layer_types is not None and SLIDING not in layer_types:
      window = None
    eos = d.get("eos_token_id")
    checkpoint_dtype = d.get("dtype") or d.get("torch_dtype") or "float32"
    if checkpoint_dtype not in ("float32", "bfloat16", "float16"):
      checkpoint_dtype = "float32"
    return ModelConfig(
      family=family,
      vocab_size=int(d["vocab_size"]),
      hidden_size=hidden,
      intermediate_size=int(d["intermediate_size"]),
      num_layers=num_layers,
      num_heads=heads,
      num_kv_heads=int(d.get("num_key_value_heads") or heads),
      head_dim=int(d.get("head_dim") or hidden // heads),
      rope_theta=g_theta,
      rope_local_theta=l_theta,
      rope_scaling=None if g_scale is None else tuple(sorted(g_scale.items())),
      rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(d.get("tie_word_embeddings", family == "gemma3")),
      attention_bias=family == "qwen2" or bool(d.get("attention_bias", False)),
      attention_out_bias=family != "qwen2" and bool(d.get("attention_bias", False)),
      mlp_bias=bool(d.get("mlp_bias", False)),
      hidden_act=d.get("hidden_activation") or d.get("hidden_act") or "silu",
      sliding_window=None if window is None else int(window),
      layer_types=None if layer_types is None else tuple(layer_types),
      query_pre_attn_scalar=(
        float(d.get("query_pre_attn_scalar", 256)) if family == "gemma3" else None
      ),
      attn_logit_softcap=d.get("attn_logit_softcapping"),
      final_logit_softcap=d.get("final_logit_softcapping"),
      max_position_embeddings=int(d.get("max_position_embeddings", 4096)),
      bos_token_id=d.get("bos_token_id"),
      eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
      pad_token_id=d.get("pad_token_id"),
      dtype=dtype or "float32",
      param_dtype=param_dtype or checkpoint_dtype,
    )
  except KeyError as e:
    raise UserError(f"{source}: missing field {e.args[0]!r}") from None
  except (TypeError, ValueError) as e:
    raise UserError(f"{source}: {' '.join(str(e).split())}") from None


def _int_if_whole(x: float | None):
  return int(x) if x is not None and float(x).is_integer() else x


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
  """The config.json dict transformers reads back into the same architecture."""
  d: dict[str, Any] = {
    "architectures": [HF_ARCHITECTURE[cfg.family]],
    "model_type": HF_MODEL_TYPE[cfg.family],
    "vocab_size": cfg.vocab_size,
    "hidden_size": cfg.hidden_size,
    "intermediate_size": cfg.intermediate_size,
    "num_hidden_layers": cfg.num_layers,
    "num_attention_heads": cfg.num_heads,
    "num_key_value_heads": cfg.num_kv_heads,
    "head_dim": cfg.head_dim,
    "rms_norm_eps": cfg.rms_norm_eps,
    "max_position_embeddings": cfg.max_position_embeddings,
    "tie_word_embeddings": cfg.tie_embeddings,
    "bos_token_id": cfg.bos_token_id,
    "eos_token_id": list(cfg.eos_token_id)
    if isinstance(cfg.eos_token_id, tuple)
    else cfg.eos_token_id,
    "pad_token_id": cfg.pad_token_id,
    "dtype": cfg.param_dtype,
    "use_cache": True,
  }
  glob = {"rope_type": "default", "rope_theta": cfg.rope_theta}
  if cfg.rope_scaling:
    glob.update(cfg.rope_scaling_dict())
  if cfg.family == "gemma3":
    d.update(
      {
        "hidden_activation": cfg.hidden_act,
        # transformers' strict config wants an int here (it always is one in practice)
        "query_pre_attn_scalar": _int_if_whole(cfg.query_pre_attn_scalar),
        "sliding_window": cfg.sliding_window,
        "layer_types": list(cfg.layer_types or [GLOBAL] * cfg.num_layers),
        "attn_logit_softcapping": cfg.attn_logit_softcap,
        "final_logit_softcapping": cfg.final_logit_softcap,
        "attention_bias": cfg.attention_bias,
        "rope_parameters": {
          GLOBAL: glob,
          SLIDING: {"rope_type": "default", "rope_theta": cfg.rope_local_theta},
        },
      }
    )
  else:
    d["hidden_act"] = cfg.hidden_act
    d["rope_parameters"] = glob
    if cfg.family == "llama":
      d.update(attention_bias=cfg.attention_bias, mlp_bias=cfg.mlp_bias)
    if cfg.family == "qwen2":
      d.update(
        use_sliding_window=cfg.sliding_window is not None,
        sliding_window=cfg.sliding_window,
        layer_types=list(cfg.layer_types or [GLOBAL] * cfg.num_layers),
      )
  return d


# ----------------------------------------------------------------------------------------------
# Tensor name table. "T" = HF's nn.Linear weight [out, in]: ours is W.T reshaped; n_in counts our
# leading (input) dims. "copy" = same array; "flat" = HF's [H*Dh] bias, ours [H, Dh].


@dataclasses.dataclass(frozen=True)
class _Entry:
  hf: str
  ours: tuple
  kind: str = "copy"
  n_in: int = 1


def tensor_table(cfg: ModelConfig) -> list[_Entry]:
  """HF tensor name <-> our parameter path, for every parameter of the decoder."""
  e = [
    _Entry("model.embed_tokens.weight", ("embed",)),
    _Entry("model.norm.weight", ("final_norm", "scale")),
  ]
  if not cfg.tie_embeddings:
    e.append(_Entry("lm_head.weight", ("lm_head",)))
  for i in range(cfg.num_layers):
    p, o = f"model.layers.{i}.", ("layers", i)
    e += [_Entry(p + "input_layernorm.weight", o + ("input_norm", "scale"))]
    if cfg.is_gemma:
      e += [
        _Entry(p + "post_attention_layernorm.weight", o + ("post_attn_norm", "scale")),
        _Entry(p + "pre_feedforward_layernorm.weight", o + ("pre_mlp_norm", "scale")),
        _Entry(p + "post_feedforward_layernorm.weight", o + ("post_mlp_norm", "scale")),
        _Entry(p + "self_attn.q_norm.weight", o + ("attn", "q_norm", "scale")),
        _Entry(p + "self_attn.k_norm.weight", o + ("attn", "k_norm", "scale")),
      ]
    else:
      e += [_Entry(p + "post_attention_layernorm.weight", o + ("pre_mlp_norm", "scale"))]
    for n in "qkv":
      e.append(_Entry(p + f"self_attn.{n}_proj.weight", o + ("attn", f"{n}_proj"), "T"))
      if cfg.attention_bias:
        e.append(_Entry(p + f"self_attn.{n}_proj.bias", o + ("attn", f"{n}_bias"), "flat"))
    e.append(_Entry(p + "self_attn.o_proj.weight", o + ("attn", "o_proj"), "T", n_in=2))
    if cfg.attention_out_bias:
      e.append(_Entry(p + "self_attn.o_proj.bias", o + ("attn", "o_bias")))
    for n in ("gate", "up", "down"):
      e.append(_Entry(p + f"mlp.{n}_proj.weight", o + ("mlp", f"{n}_proj"), "T"))
      if cfg.mlp_bias:
        e.append(_Entry(p + f"mlp.{n}_proj.bias", o + ("mlp", f"{n}_bias")))
  return e


def _hf_shape(entry: _Entry, ours: tuple[int, ...]) -> tuple[int, ...]:
  if entry.kind == "T":
    return (math.prod(ours[entry.n_in :]), math.prod(ours[: entry.n_in]))
  return (math.prod(ours),) if entry.kind == "flat" else tuple(ours)


def _to_ours(entry: _Entry, x: np.ndarray, ours: tuple[int, ...]) -> np.ndarray:
  return x.T.reshape(ours) if entry.kind == "T" else x.reshape(ours)


def _to_hf(entry: _Entry, x: np.ndarray) -> np.ndarray:
  if entry.kind == "T":
    n_in = math.prod(x.shape[: entry.n_in])
    return np.ascontiguousarray(x.reshape(n_in, -1).T)
  return np.ascontiguousarray(x.reshape(-1) if entry.kind == "flat" else x)


# ----------------------------------------------------------------------------------------------
# Reading safetensors


def _check_safetensors(file: Path) -> dict[str, dict]:
  """Parse the header and check every tensor lies inside the file (names the truncated tensor)."""
  size = file.stat().st_size
  with open(file, "rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise UserError(f"{file}: truncated safetensors file ({size} bytes, no header)")
    (n,) = struct.unpack("<Q", head)
    if n > size - 8:
      raise UserError(f"{file}: truncated safetensors file (header of {n} bytes, file {size})")
    try:
      header = json.loads(f.read(n))
    except ValueError:
      raise UserError(f"{file}: not a safetensors file (bad JSON header)") from None
  header.pop("__metadata__", None)
  data = size - 8 - n
  for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][1]):
    end = info["data_offsets"][1]
    if end > data:
      raise UserError(
        f"{file}: truncated safetensors file: tensor {name} needs bytes up to "
        f"{end} but only {data} data bytes remain"
      )
  return header


def _weight_files(path: Path) -> dict[str, Path]:
  """tensor name -> the file that holds it (single file or sharded with an index)."""
  index = path / _INDEX
  if index.is_file():
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError):
      raise UserError(f"{index}: not a safetensors index (no weight_map)") from None
    out = {}
    for name, fname in weight_map.items():
      f = path / fname
      if not f.is_file():
        raise UserError(f"{index}: shard {fname} of tensor {name} is missing")
      out[name] = f
    return out
  single = path / _SINGLE
  if single.is_file():
    return {name: single for name in _check_safetensors(single)}
  raise UserError(f"{path}: no {_SINGLE} or {_INDEX} (only safetensors weights are read)")


_TEXT_PREFIXES = ("model.language_model.", "language_model.model.")


def read_tensors(path: Path, names: list[str]) -> Iterator[tuple[str, str, Path, np.ndarray]]:
  """Yield (name, name in the file, file, array) for the requested HF tensor names.

  Errors name the file and the tensor.
  """
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel

  files = _weight_files(path)
  stored = {n: n for n in files}  # our name -> name in the file
  # Multimodal Gemma 3 stores the text decoder under another prefix: read it under our names.
  for prefix in _TEXT_PREFIXES:
    if "model.embed_tokens.weight" not in stored and prefix + "embed_tokens.weight" in files:
      stored = {"model." + k[len(prefix) :]: k for k in files if k.startswith(prefix)}
  missing = [n for n in names if n not in stored]
  if missing:
    fnames = sorted({f.name for f in files.values()}) or ["(none)"]
    raise UserError(
      f"{path}: tensor {missing[0]} not found in {', '.join(fnames)}"
      + (f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else "")
    )
  by_file: dict[Path, list[str]] = {}
  for n in names:
    by_file.setdefault(files[stored[n]], []).append(n)
  for file, file_names in by_file.items():
    _check_safetensors(file)
    try:
      with safe_open(str(file), framework="numpy") as f:
        for n in file_names:
          yield n, stored[n], file, f.get_tensor(stored[n])
    except UserError:
      raise
    except Exception as e:  # safetensors raises its own error types for corrupt files
      raise UserError(f"{file}: cannot read safetensors ({' '.join(str(e).split())})") from None


# ----------------------------------------------------------------------------------------------
# Public API


def read_config(path: str | Path, **dtypes) -> ModelConfig:
  path = Path(path)
  file = path / "config.json"
  if not file.is_file():
    raise UserError(f"{file}: missing (not a Hugging Face model directory)")
  try:
    d = json.loads(file.read_text())
  except ValueError as e:
    raise UserError(f"{file}: invalid JSON ({e})") from None
  return config_from_hf(d, str(file), **dtypes)


def abstract_decoder(cfg: ModelConfig) -> Decoder:
  """A Decoder with shapes only (no memory): the target of a load."""
  return nnx.eval_shape(lambda: Decoder(cfg, nnx.Rngs(0)))


def load(
  path: str | Path, dtype: str | None = None, param_dtype: str | None = None
) -> tuple[ModelConfig, Decoder]:
  """Load a local HF directory into our config and a Decoder.

  Args:
    path: directory with config.json and model.safetensors (or shards + index).
    dtype: compute dtype; default float32.
    param_dtype: storage dtype; default the checkpoint's (config.json 'dtype'/'torch_dtype').
  """
  path = Path(path)
  if not path.is_dir():
    raise UserError(f"{path}: not a directory (expected a Hugging Face model directory)")
  cfg = read_config(path, dtype=dtype, param_dtype=param_dtype)
  return cfg, decoder_from_tensors(cfg, path)


def decoder_from_tensors(cfg: ModelConfig, path: Path) -> Decoder:
  """Fill an abstract Decoder with the HF tensors of `path`, checking every shape."""
  abstract = abstract_decoder(cfg)
  graphdef, state = nnx.split(abstract)
  flat = dict(nnx.to_flat_state(state))
  table = {e.hf: e for e in tensor_table(cfg)}
  pdt = jnp.dtype(cfg.param_dtype)
  for name, stored, file, x in read_tensors(path, list(table)):
    entry = table[name]
    var = flat[entry.ours]
    want = _hf_shape(entry, var.shape)
    if tuple(x.shape) != want:
      raise UserError(
        f"{file}: tensor {stored} has shape {list(x.shape)}, expected {list(want)} from config.json"
      )
    var.set_value(jnp.asarray(_to_ours(entry, x, var.shape), dtype=pdt))
  state = nnx.from_flat_state(list(flat.items()))
  return nnx.merge(graphdef, state)


def hf_tensors(cfg: ModelConfig, decoder: Decoder, dtype=None) -> dict[str, np.ndarray]:
  """Our parameters as HF tensors (numpy), named as transformers expects."""
  flat = dict(nnx.to_flat_state(nnx.state(decoder, nnx.Param)))
  out = {}
  for e in tensor_table(cfg):
    x = np.asarray(jax.device_get(flat[e.ours].get_value()))
    if dtype is not None:
      x = x.astype(jnp.dtype(dtype))
    out[e.hf] = _to_hf(e, x)
  return out


def _shards(tensors: dict[str, np.ndarray], max_bytes: int) -> list[list[str]]:
  groups, cur, size = [], [], 0
  for name in sorted(tensors):
    n = tensors[name].nbytes
    if cur and size + n > max_bytes:
      groups.append(cur)
      cur, size = [], 0
    cur.append(name)
    size += n
  if cur:
    groups.append(cur)
  return groups


def export(
  cfg: ModelConfig,
  decoder: Decoder,
  tokenizer,
  out_dir: str | Path,
  *,
  max_shard_bytes: int = MAX_SHARD_BYTES,
  dtype: str | None = None,
) -> Path:
  """Write an HF directory (config, safetensors shards + index, generation config, tokenizer).

  Args:
    tokenizer: anything with `save_pretrained(dir)` (an HF tokenizer), or None.
    dtype: storage dtype of the written tensors; default cfg.param_dtype.
  """
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  dtype = dtype or cfg.param_dtype
  tensors = hf_tensors(cfg, decoder, dtype)
  groups = _shards(tensors, max_shard_bytes)
  meta = {"format": "pt"}  # transformers refuses safetensors without this metadata
  if len(groups) == 1:
    save_file(tensors, str(out / _SINGLE), metadata=meta)
  else:
    weight_map = {}
    for i, names in enumerate(groups):
      fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
      save_file({n: tensors[n] for n in names}, str(out / fname), metadata=meta)
      weight_map.update({n: fname for n in names})
    index = {
      "metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
      "weight_map": dict(sorted(weight_map.items())),
    }
    (out / _INDEX).write_text(json.dumps(index, indent=2) + "\n")
  hf_cfg = config_to_hf(dataclasses.replace(cfg, param_dtype=dtype))
  (out / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
  gen = {
    k: hf_cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if hf_cfg[k] is not None
  }
  (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
  if tokenizer is not None:
    tokenizer.save_pretrained(str(out))
  for f in out.glob("*.safetensors"):  # safetensors writes 0600; the rest of the dir is 0644
    _readable_mode(f)
  return out


def _readable_mode(path: Path) -> None:
  """Give `path` the mode a newly created file gets (0666 minus the umask)."""
  mask = os.umask(0)
  os.umask(mask)
  os.chmod(path, 0o666 & ~mask)
