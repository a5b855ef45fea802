"""Host side of one rollout: CCCS prompts -> (sampled token ids) -> completions -> judge jobs ->
rewards and FGO masks laid out as batch arrays.

Everything here is plain Python/numpy around the device functions; the trainer calls the sampler
and the forward passes. The split keeps each step testable without a model.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Sequence

import numpy as np

from stepcoder_jax import completion
from stepcoder_jax.completion import encode_prompt
from stepcoder_jax.data import prompts as prompts_lib
from stepcoder_jax.data.record import Problem
from stepcoder_jax.rl import batching, fgo
from stepcoder_jax.rl.cccs import Curriculum

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class Item:
  """One sampled program: its prompt, tokens, text and (once judged) result."""
  problem: Problem
  stage: int
  prompt: prompts_lib.PromptParts
  prompt_ids: list[int]
  response_ids: list[int] = dataclasses.field(default_factory=list)
  completion: str = ""                      # the text judged: response cut at a stop string
  offsets: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # per response token
  finish: str = ""                          # completion.EOS | STOP | LENGTH (truncated)
  result: Any = None                        # execution.ExecResult
  padding: bool = False                     # a row only there to keep the batch divisible


# A question is never cut below this many tokens to make a prompt fit: shorter, the task is gone;
# a CCCS stage whose prefix leaves less room is passed over instead (see `make_items`).
MIN_QUESTION_TOKENS = 16


def question_budget(max_prompt_tokens: int) -> int:
  """The question's share of a prompt before any shortening (the rest is for the code prefix)."""
  return max(MIN_QUESTION_TOKENS, max_prompt_tokens * 3 // 4)


def fit_prompt(problem: Problem, prefix: str, tokenizer, style: str, max_prompt_tokens: int
               ) -> tuple[prompts_lib.PromptParts, list[int], bool] | None:
  """(parts, ids, shortened) of the prompt of `problem` with `prefix`, within max_prompt_tokens.

  Only the question is cut (the code prefix and the code boundary are kept): first to the usual
  `question_budget`, then as much further as the prompt is over, down to MIN_QUESTION_TOKENS.
  `shortened` says that the second cut was needed. None when even that does not fit.
  """
  budget = question_budget(max_prompt_tokens)
  shortened = False
  while True:
    parts = prompts_lib.build_prompt(problem, tokenizer, prefix=prefix, style=style,
                                     max_question_tokens=budget)
    ids = encode_prompt(tokenizer, parts)
    over = len(ids) - max_prompt_tokens
    if over <= 0:
      return parts, ids, shortened
    if not parts.truncated:  # the question is whole (or lives in the code): measure it
      budget = min(budget, len(tokenizer(problem.question, add_special_tokens=False)
                               ["input_ids"]))
    if budget - over < MIN_QUESTION_TOKENS or not problem.question.strip():
      return None
    budget -= over
    shortened = True


@dataclasses.dataclass
class PromptReport:
  """How the prompts of one iteration were made to fit max_prompt_tokens.

  Attributes:
    skipped: problems with no prompt that fits, even the question alone at s* = 0.
    shortened: rows whose question was cut below `question_budget` to fit.
    stages_passed_over: CCCS stages passed over because their prefix left no room for the
      question (the problem moves to its next, shorter-prefix stage).
  """
  skipped: list[Problem] = dataclasses.field(default_factory=list)
  shortened: int = 0
  stages_passed_over: int = 0


def make_items(problems: Sequence[Problem], curriculum: Curriculum | None, tokenizer,
               style: str, max_prompt_tokens: int) -> tuple[list[Item], PromptReport]:
  """Prompts for `problems` (a problem repeated once per sample) at their current CCCS stage.

  A prompt over `max_prompt_tokens` gets a shorter question; when its stage prefix leaves too little
  room, the problem passes over that stage for good (`Curriculum.skip_stage`), so it is never
  stuck; only a problem whose prompt does not fit even at s* = 0 is left out.
  """
  items, report, built = [], PromptReport(), {}
  for p in problems:
    if p.id not in built:
      built[p.id] = _fit_at_stage(p, curriculum, tokenizer, style, max_prompt_tokens, report)
      if built[p.id] is None:
        report.skipped.append(p)
    fit = built[p.id]
    if fit is None:
      continue
    parts, ids, shortened = fit
    report.shortened += shortened
    stage = curriculum.stage(p) if curriculum is not None else 0
    items.append(Item(problem=p, stage=stage, prompt=parts, prompt_ids=list(ids)))
  if report.skipped:
    _log.warning("%d problem(s) have no prompt within %d tokens, left out: %s",
                 len(report.skipped), max_prompt_tokens,
                 ", ".join(q.id for q in report.skipped[:5]))
  return items, report


def _fit_at_stage(problem: Problem, curriculum: Curriculum | None, tokenizer, style: str,
                  max_prompt_tokens: int, report: PromptReport):
  """`fit_prompt` at the problem's stage, passing over stages that cannot fit (see make_items)."""
  while True:
    prefix = curriculum.prefix(problem) if curriculum is not None else ""
    fit = fit_prompt(problem, prefix, tokenizer, style, max_prompt_tokens)
    if fit is not None or curriculum is None or not curriculum.skip_stage(problem):
      return fit
    report.stages_passed_over += 1


def pad_items(items: list[Item], multiple: int) -> list[Item]:
  """`items` and padding rows up to a multiple of `multiple` (rare: only after skipped prompts).

  Padding rows are fresh copies of rows spread over the batch (not items[0] again and again),
  flagged `padding`: the trainer gives them zero loss weight and does not record their verdicts.
  """
  need = -len(items) % multiple
  sources = [items[k * len(items) // need] for k in range(need)]
  return items + [Item(problem=it.problem, stage=it.stage, prompt=it.prompt,
                       prompt_ids=list(it.prompt_ids), padding=True) for it in sources]


def fill_responses(items: list[Item], responses: Sequence[Sequence[int]], tokenizer,
                   eos_ids: Sequence[int]) -> None:
  """Cut each sampled response the one way evaluation and `generate` cut theirs."""
  for it, r in zip(items, responses):
    c = completion.cut(tokenizer, r, it.prompt.stop, eos_ids, context=it.prompt.text)
    it.response_ids, it.completion, it.offsets, it.finish = c.ids, c.text, c.offsets, c.finish


def jobs(items: Sequence[Item]):
  from stepcoder_jax.execution.job import Job  # host-only import; no jax
  return [Job(problem=it.problem, completion=it.completion, prefix=it.prompt.code_prefix)
          for it in items]


def pack(items: Sequence[Item], pad_id: int, prompt_len: int, response_len: int):
  """Token arrays of the batch (see batching.py for the layout)."""
  return batching.pack([it.prompt_ids for it in items], [it.response_ids for it in items],
                       pad_id=pad_id, prompt_len=prompt_len, response_len=response_len)


def coverage_measured(result) -> bool:
  """Whether the judge measured line coverage of the run (`ExecResult.coverage_state`); results
  without that field count as measured unless the program did not compile."""
  state = getattr(result, "coverage_state", None)
  return state == "measured" if state is not None else result.outcome != "compile_error"


def truncated_rate(items: Sequence[Item]) -> float:
  """Fraction of responses cut by max_new_tokens (no EOS, no stop string): a metric."""
  return sum(it.finish == completion.LENGTH for it in items) / max(1, len(items))


def rewards_and_masks(items: Sequence[Item], batch: dict[str, np.ndarray], prompt_len: int,
                      fgo_enabled: bool) -> dict[str, np.ndarray]:
  """Scalar rewards [B] and FGO masks [B, L] from the judged items."""
  rewards = np.array([it.result.reward for it in items], np.float32)
  masks = [fgo.token_mask(it.completion, it.offsets, it.result.executed_lines,
                          it.result.executable_lines, it.result.outcome, enabled=fgo_enabled,
                          coverage_measured=coverage_measured(it.result))
           for it in items]
  fgo_mask = batching.place_response_values(masks, batch["tokens"].shape[1], prompt_len,
                                            np.float32)
  return {"rewards": rewards, "fgo_mask": fgo_mask * batch["response_mask"]}


def summary(items: Sequence[Item], fgo_masks: np.ndarray | None = None,
            response_mask: np.ndarray | None = None) -> dict[str, float]:
  """Host metrics of a judged rollout: mean reward, pass rate, outcome fractions, FGO density."""
  n = max(1, len(items))
  out = {"reward_mean": float(np.mean([it.result.reward for it in items])) if items else 0.0,
         "pass_rate": sum(it.result.outcome == "passed" for it in items) / n,
         "response_tokens_mean": float(np.mean([len(it.response_ids) for it in items]))
                                 if items else 0.0}
  for o in ("passed", "failed", "runtime_error", "timeout", "compile_error"):
    out[f"outcome/{o}"] = sum(it.result.outcome == o for it in items) / n
  out["truncated_rate"] = truncated_rate(items)
  if fgo_masks is not None and response_mask is not None:
    out["fgo_mask_density"] = float(fgo_masks.sum() / max(1.0, float(response_mask.sum())))
  return out
