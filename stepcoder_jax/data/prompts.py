"""Prompt text for a problem: the question, then an open code block the model continues.

Two styles:
  * ``plain`` (base/completion models)::

        QUESTION:
        <question>

        <format note>
        ANSWER:
        ```python
        <code prefix>

  * ``chat``: the question and format note are the user turn, rendered with the tokenizer's chat
    template (``apply_chat_template(..., add_generation_prompt=True)``); the assistant turn then
    starts with ```` ```python\\n<code prefix>```` so the model answers inside the code block. A
    tokenizer without a chat template falls back to ``plain`` (with a warning, once).

The code prefix is what the program starts with, and exactly what ``execution.Job.prefix`` gets:
the CCCS curriculum prefix (a prefix of the canonical solution) when one is given, else the
problem's starter code (function signature for call-based problems, the prompt for HumanEval,
empty for stdio). The prompt text always ends with the code prefix, and ``code_start`` is where it
begins, so ``text[code_start:] == code_prefix``: CCCS and FGO use that boundary (prompt chars before
it are never trained on; program line 1 is the line holding ``text[code_start]``).

When the starter code already contains the question (HumanEval: the question is the prompt with its
docstring), the question is not repeated; the header asks to complete the function instead.

Stop strings: both styles open a fenced ```` ```python```` block, so generation stops at
``"\\n```"`` (the closing fence); the sampler also stops at the tokenizer's EOS. Plain style adds
``"\\nQUESTION:"`` in case a base model starts a new problem without closing the fence.

Truncation: a question longer than ``max_question_tokens`` (counted with the tokenizer, or as
characters / 4 without one) is cut, marked with ``"\\n..."``, logged once per problem, counted in
``truncation_stats()`` and flagged in ``PromptParts.truncated``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from stepcoder_jax.completion import encode_prompt
from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError

STYLES = ("plain", "chat")
CODE_FENCE = "```python\n"
STOP_STRINGS = {"plain": ("\n```", "\nQUESTION:"), "chat": ("\n```",)}
TRUNCATION_MARK = "\n..."
CHARS_PER_TOKEN = 4  # estimate used when no tokenizer is given

_log = logging.getLogger(__name__)
_stats = {"truncated_prompts": 0}
_truncated_ids: set[str] = set()
_warned_no_template = False


@dataclasses.dataclass(frozen=True)
class PromptParts:
  """A built prompt.

  Attributes:
    text: the whole prompt string given to the model.
    code_start: char offset in ``text`` where the program begins.
    code_prefix: ``text[code_start:]``; the program is ``code_prefix + completion``.
    stop: stop strings for this style (EOS stops as well).
    truncated: whether the question was cut to ``max_question_tokens``.
    style: the style actually used ('chat' falls back to 'plain' without a template).
    add_special_tokens: whether to let the tokenizer add BOS etc. when encoding ``text`` (False
      for chat: the template already wrote them).
  """

  text: str
  code_start: int
  code_prefix: str
  stop: tuple[str, ...]
  truncated: bool
  style: str
  add_special_tokens: bool

  @property
  def head(self) -> str:
    """The prompt before the program (never part of the program)."""
    return self.text[: self.code_start]


def truncation_stats() -> dict[str, int]:
  """Prompts built with a truncated question, and distinct problems affected, since reset."""
  return {
    "truncated_prompts": _stats["truncated_prompts"],
    "truncated_problems": len(_truncated_ids),
  }


def reset_truncation_stats() -> None:
  _stats["truncated_prompts"] = 0
  _truncated_ids.clear()


def _truncate(question: str, tokenizer: Any, max_tokens: int | None) -> tuple[str, bool]:
  if max_tokens is None:
    return question, False
  if max_tokens <= 0:
    raise UserError(f"max_question_tokens must be positive, got {max_tokens}")
  if tokenizer is None:
    limit = max_tokens * CHARS_PER_TOKEN
    return (question, False) if len(question) <= limit else (question[:limit], True)
  enc = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
  ids = enc["input_ids"]
  if len(ids) <= max_tokens:
    return question, False
  return question[: enc["offset_mapping"][max_tokens - 1][1]], True


def _format_note(problem: Problem) -> str:
  if problem.test_kind == "stdio":
    return (
      "Use Standard Input format: read the input from standard input and print the answer "
      "to standard output."
    )
  if problem.test_kind == "call":
    return (
      f"Use Call-Based format: complete the function `{problem.fn_name}`; it is called with "
      "the test arguments and must return the answer."
    )
  if problem.entry_point:
    return f"Write the Python function `{problem.entry_point}`."
  return "Write the Python code."


def code_prefix_for(problem: Problem, prefix: str = "") -> str:
  """The program's given start: the curriculum prefix when non-empty, else the starter code."""
  return prefix if prefix else problem.starter_code


def _question_in_code(problem: Problem) -> bool:
  q = problem.question.strip()
  return bool(q) and q in problem.starter_code


def _user_text(problem: Problem, question: str) -> str:
  if _question_in_code(problem):
    return f"Complete the following Python function.\n\n{_format_note(problem)}"
  return f"QUESTION:\n{question}\n\n{_format_note(problem)}"


def _has_chat_template(tokenizer: Any) -> bool:
  return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def build_prompt(
  problem: Problem,
  tokenizer: Any = None,
  prefix: str = "",
  style: str = "plain",
  max_question_tokens: int | None = None,
) -> PromptParts:
  """The prompt for ``problem``; the model continues inside its code block.

  Args:
    problem: the problem.
    tokenizer: a Hugging Face tokenizer (needed for the chat template; used to count question
      tokens); may be None for plain style.
    prefix: the CCCS prefix (a prefix of the canonical solution); '' means the starter code.
    style: 'plain' or 'chat'.
    max_question_tokens: cut longer questions (see the module docstring); None: no limit.

  Returns:
    PromptParts; ``text[code_start:] == code_prefix``.
  """
  global _warned_no_template
  if style not in STYLES:
    raise UserError(f"prompt style {style!r} is not one of {STYLES}")
  # HumanEval-like problems show the question only inside the code, which is never cut.
  limit = None if _question_in_code(problem) else max_question_tokens
  question, truncated = _truncate(problem.question, tokenizer, limit)
  if truncated:
    question += TRUNCATION_MARK
    _stats["truncated_prompts"] += 1
    if problem.id not in _truncated_ids:
      _truncated_ids.add(problem.id)
      _log.warning("problem %s: question cut to %d tokens", problem.id, max_question_tokens)
  code = code_prefix_for(problem, prefix)
  user = _user_text(problem, question)
  if style == "chat" and not _has_chat_template(tokenizer):
    if not _warned_no_template:
      _warned_no_template = True
      _log.warning("tokenizer has no chat template: using the plain prompt style")
    style = "plain"
  if style == "chat":
    head = tokenizer.apply_chat_template(
      [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    if not isinstance(head, str):
      raise UserError("tokenizer.apply_chat_template(tokenize=False) did not return text")
    head += CODE_FENCE
    add_special = False
  else:
    head = f"{user}\nANSWER:\n{CODE_FENCE}"
    add_special = True
  return PromptParts(
    text=head + code,
    code_start=len(head),
    code_prefix=code,
    stop=STOP_STRINGS[style],
    truncated=truncated,
    style=style,
    add_special_tokens=add_special,
  )


def strip_stop(completion: str, stop: tuple[str, ...]) -> str:
  """The completion cut at the first stop string (the sampler may return it included)."""
  cut = len(completion)
  for s in stop:
    i = completion.find(s)
    if i != -1:
      cut = min(cut, i)
  return completion[:cut]


# A question is never cut below this many tokens to make a prompt fit: shorter, the task is gone;
# a CCCS stage whose prefix leaves less room is passed over instead (rl/rollout.py make_items).
MIN_QUESTION_TOKENS = 16


def question_budget(max_prompt_tokens: int) -> int:
  """The question's share of a prompt before any shortening (the rest is for the code prefix)."""
  return max(MIN_QUESTION_TOKENS, max_prompt_tokens * 3 // 4)


def fit_prompt(
  problem: Problem, prefix: str, tokenizer, style: str, max_prompt_tokens: int
) -> tuple[PromptParts, list[int], bool] | None:
  """(parts, ids, shortened) of the prompt of `problem` with `prefix`, within max_prompt_tokens.

  Only the question is cut (the code prefix and the code boundary are kept): first to the usual
  `question_budget`, then as much further as the prompt is over, down to MIN_QUESTION_TOKENS.
  `shortened` says that the second cut was needed. None when even that does not fit.
  Training (rl/rollout.py), evaluation and SFT all build their prompts with it, so a problem has
  one prompt per stage wherever it is built.
  """
  budget = question_budget(max_prompt_tokens)
  shortened = False
  while True:
    parts = build_prompt(problem, tokenizer, prefix=prefix, style=style, max_question_tokens=budget)
    ids = encode_prompt(tokenizer, parts)
    over = len(ids) - max_prompt_tokens
    if over <= 0:
      return parts, ids, shortened
    if not parts.truncated:  # the question is whole (or lives in the code): measure it
      budget = min(budget, len(tokenizer(problem.question, add_special_tokens=False)["input_ids"]))
    if budget - over < MIN_QUESTION_TOKENS or not problem.question.strip():
      return None
    budget -= over
    shortened = True
