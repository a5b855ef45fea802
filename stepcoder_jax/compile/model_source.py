"""The architecture to compile, without loading weights: a tiny preset, an HF directory's
config.json, a config.json given on the command line, or a bundled config named like the model
directory (model_configs/, e.g. the paper's DeepSeek-Coder-6.7B-Instruct), so a run can be
checked before its weights are downloaded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from stepcoder_jax.errors import UserError
from stepcoder_jax.models.config import FAMILIES, ModelConfig, ModelSpec

BUNDLED = Path(__file__).resolve().parent / "model_configs"


def _from_json(file: Path, spec: ModelSpec) -> ModelConfig:
  from stepcoder_jax.models import hf_io

  try:
    d = json.loads(file.read_text())
  except (OSError, ValueError) as e:
    raise UserError(f"{file}: not a readable config.json ({e})") from None
  return hf_io.config_from_hf(d, str(file), dtype=spec.dtype, param_dtype=spec.param_dtype)


def model_config(
  spec: ModelSpec, path: str | None = None, config_file: str | None = None
) -> ModelConfig:
  """The ModelConfig a run of `spec` (gin `model`) would train, with its dtypes, remat,
  scan_layers and output vocabulary."""
  path = path or spec.path
  name = Path(path).expanduser()
  if config_file:
    cfg = _from_json(Path(config_file), spec)
  elif path.startswith("tiny-") and path[5:] in FAMILIES:
    from stepcoder_jax.models.tokenizer import tiny_tokenizer

    tok = tiny_tokenizer()
    cfg = ModelConfig.tiny(
      path[5:],
      vocab_size=len(tok),
      bos_token_id=tok.bos_token_id,
      eos_token_id=tok.eos_token_id,
      pad_token_id=tok.pad_token_id,
      dtype=spec.dtype or "float32",
      param_dtype=spec.param_dtype or "float32",
    )
  elif (name / "config.json").is_file():
    cfg = _from_json(name / "config.json", spec)
  elif (BUNDLED / f"{name.name}.json").is_file():
    cfg = _from_json(BUNDLED / f"{name.name}.json", spec)
  else:
    known = ", ".join(sorted(p.stem for p in BUNDLED.glob("*.json")))
    raise UserError(
      f"{path}: no config.json there; pass --model_config CONFIG_JSON (bundled "
      f"architectures, by directory name: {known})"
    )
  flags = {"scan_layers": True} if spec.scan_layers else {}
  if spec.remat_override is not None:
    flags["remat"] = spec.remat
  cfg = dataclasses.replace(cfg, **flags)
  if spec.output_vocab is not None:
    from stepcoder_jax.models import output_vocab

    cfg = output_vocab.apply(cfg, spec.output_vocab, required=cfg.eos_ids)
  return cfg
