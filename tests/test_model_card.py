"""The model card `export` writes: provenance, results and the terms that apply."""

import json

import pytest

from stepcoder_jax.errors import UserError
from stepcoder_jax.models import model_card

SIZES = dict(family="gemma3", num_layers=18, vocab_size=262144, dtype="float32")


def test_gemma_card_carries_the_gemma_terms_and_the_provenance(tmp_path):
  model_card.write_provenance(
    tmp_path,
    base_model="gemma3-270m",
    data="my.jsonl (4 problems)",
    method="StepCoder (PPO + CCCS + FGO)",
    settings={"ppo.kl_coef": 0.05},
  )
  text = model_card.card(
    name="m", provenance=model_card.read_provenance(tmp_path), gemma=True, **SIZES
  )
  assert "license: gemma" in text and model_card.GEMMA_TERMS_URL in text
  assert "**Base model**: gemma3-270m" in text and "my.jsonl (4 problems)" in text
  assert "| `ppo.kl_coef` | 0.05 |" in text and "None were given" in text


def test_other_card_names_the_base_models_licence_and_embeds_results(tmp_path):
  (tmp_path / "eval.md").write_text("| difficulty | pass@1 |\n|---|---:|\n| **all** | 12.5 |\n")
  (tmp_path / "eval.json").write_text(json.dumps({"table": {}}))
  results = [("eval.json", model_card.results_text(tmp_path / "eval.json"))]
  text = model_card.card(
    name="m", provenance={"base_model": "org/base"}, results=results, **dict(SIZES, family="qwen2")
  )
  assert "license: other" in text and "gemma" not in text.lower()
  assert "licence of the base model (org/base)" in text and "| **all** | 12.5 |" in text


def test_results_that_are_not_an_evaluation_are_one_line_errors(tmp_path):
  with pytest.raises(UserError, match="no such file"):
    model_card.results_text(tmp_path / "missing.json")
  (tmp_path / "x.json").write_text("[1]")
  with pytest.raises(UserError, match="not an `eval` result"):
    model_card.results_text(tmp_path / "x.json")
