"""The model card (`README.md`) that `export` writes beside the weights, and the provenance file
(`stepcoder_provenance.json`) that `train` and `sft` leave in their model directories for it.

A card says what the model is (base model, data, method and settings), what was measured (an
evaluation table when one is given) and under which terms it may be used: the Gemma Terms of Use
travel with any model derived from Gemma weights. Pure text: no jax, no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stepcoder_jax.errors import UserError

PROVENANCE = "stepcoder_provenance.json"
GEMMA_TERMS_URL = "https://ai.google.dev/gemma/terms"


def write_provenance(model_dir: str | Path, **fields: Any) -> Path:
  """Record how the model in `model_dir` was made (base_model, data, method, settings)."""
  path = Path(model_dir) / PROVENANCE
  path.write_text(json.dumps(fields, indent=1, default=str) + "\n", encoding="utf-8")
  return path


def read_provenance(model_dir: str | Path) -> dict:
  """What `write_provenance` left in `model_dir`, or {} (a model from elsewhere)."""
  path = Path(model_dir) / PROVENANCE
  if not path.is_file():
    return {}
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise UserError(f"{path}: not valid JSON ({e.msg})") from None


def results_text(path: str | Path) -> str:
  """An evaluation's table as markdown: `eval.md`, or the one beside a given `eval.json`."""
  p = Path(path)
  md = p if p.suffix == ".md" else p.with_suffix(".md")
  if md.is_file():
    return md.read_text(encoding="utf-8").strip()
  if not p.is_file():
    raise UserError(f"--results {path}: no such file (give an eval.json or eval.md of `eval`)")
  try:
    table = json.loads(p.read_text(encoding="utf-8"))["table"]
  except (json.JSONDecodeError, KeyError, TypeError):
    raise UserError(f"--results {path}: not an `eval` result (no 'table')") from None
  return "```json\n" + json.dumps(table, indent=1) + "\n```"


def _settings_lines(settings: dict) -> list[str]:
  return [f"| `{k}` | {v} |" for k, v in settings.items()]


def card(
  *,
  name: str,
  family: str,
  num_layers: int,
  vocab_size: int,
  dtype: str,
  provenance: dict,
  results: list[tuple[str, str]] = (),
  gemma: bool = False,
) -> str:
  """The README.md of an exported model.

  Args:
    name: what the card calls the model (the export directory's name).
    provenance: `read_provenance` of the source, possibly with fields from the command line.
    results: (source path, markdown table) per evaluation to include.
    gemma: the weights derive from Gemma: the Gemma Terms of Use apply.
  """
  base = provenance.get("base_model") or "not recorded"
  front = [
    "---",
    "library_name: transformers",
    "pipeline_tag: text-generation",
    f"license: {'gemma' if gemma else 'other'}",
    "tags: [code, reinforcement-learning, stepcoder, stepcoder_jax]",
    "---",
    "",
  ]
  text = [
    f"# {name}",
    "",
    f"A {family} causal language model for Python code ({num_layers} layers, vocabulary "
    f"{vocab_size}, weights stored as {dtype}), written by `stepcoder-jax export`.",
    "",
    "## How it was made",
    "",
    f"- **Base model**: {base}",
    f"- **Data**: {provenance.get('data') or 'not recorded'}",
    f"- **Method**: {provenance.get('method') or 'not recorded'}",
  ]
  if provenance.get("parent"):
    text.append(f"- **Started from**: {provenance['parent']}")
  settings = provenance.get("settings") or {}
  if settings:
    text += ["", "| setting | value |", "|---|---|", *_settings_lines(settings)]
  text += ["", "## Measured results", ""]
  if results:
    for src, table in results:
      text += [f"From `{src}`:", "", table, ""]
  else:
    text += ["None were given to `export` (`--results eval.json` adds a table).", ""]
  text += [
    "## Use",
    "",
    "```python",
    "from transformers import AutoModelForCausalLM, AutoTokenizer",
    f"model = AutoModelForCausalLM.from_pretrained({name!r})",
    f"tokenizer = AutoTokenizer.from_pretrained({name!r})",
    "```",
    "",
    "Generated code should be run in a sandbox: it was trained to pass unit tests, not reviewed.",
    "",
    "## Licence and terms",
    "",
  ]
  if gemma:
    text += [
      "This model is derived from Gemma weights. Gemma is provided under and subject to "
      f"the Gemma Terms of Use ({GEMMA_TERMS_URL}); the same terms, including the use "
      "restrictions, apply to this model and must be passed on with it.",
      "",
    ]
  else:
    text += [
      f"The licence of the base model ({base}) applies to these weights; check it before "
      "redistributing them.",
      "",
    ]
  text += ["The training code (stepcoder_jax) is Apache-2.0.", ""]
  return "\n".join(front + text)
