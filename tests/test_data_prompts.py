"""Prompt building: plain and chat styles, code boundary, curriculum prefix, truncation."""

import copy
import logging

import pytest

from stepcoder_jax.data import prompts
from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError
from stepcoder_jax.models.tokenizer import tiny_tokenizer

STDIO = Problem(
  id="t/stdio/1",
  question="Read n and print n squared.",
  test_kind="stdio",
  canonical_solution="n = int(input())\nif n < 0:\n    n = -n\nprint(n * n)\n",
  inputs=["3\n"],
  outputs=["9\n"],
  difficulty="introductory",
)
CALL = Problem(
  id="t/call/1",
  question="Return the absolute value of x.",
  test_kind="call",
  canonical_solution="def absv(x):\n    if x < 0:\n        return -x\n    return x\n",
  starter_code="def absv(x):\n",
  fn_name="absv",
  inputs=[[1]],
  outputs=[1],
)
HE = Problem(
  id="HumanEval/99",
  question="def inc(x):\n    \"\"\"Return x plus one.\"\"\"\n",
  test_kind="assert",
  starter_code="def inc(x):\n    \"\"\"Return x plus one.\"\"\"\n",
  canonical_solution=("def inc(x):\n    \"\"\"Return x plus one.\"\"\"\n    return x + 1\n"),
  test_code="def check(c):\n    assert c(1) == 2\n",
  entry_point="inc",
)
TEMPLATE = (
  "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
  "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture
def chat_tok():
  tok = copy.deepcopy(tiny_tokenizer())
  tok.chat_template = TEMPLATE
  return tok


def _boundary_ok(parts):
  assert parts.text[parts.code_start :] == parts.code_prefix
  assert parts.head + parts.code_prefix == parts.text


def test_plain_stdio_opens_code_block_and_notes_stdin():
  parts = prompts.build_prompt(STDIO)
  _boundary_ok(parts)
  assert parts.code_prefix == "" and parts.text.endswith("```python\n")
  assert STDIO.question in parts.text and "standard input" in parts.text
  assert "\n```" in parts.stop and parts.style == "plain" and parts.add_special_tokens
  assert not parts.truncated


def test_plain_call_continues_starter_code():
  parts = prompts.build_prompt(CALL)
  _boundary_ok(parts)
  assert parts.code_prefix == CALL.starter_code
  assert parts.text.endswith("```python\ndef absv(x):\n")
  assert "`absv`" in parts.head


def test_curriculum_prefix_replaces_starter_and_rebuilds_solution():
  k = CALL.canonical_solution.index("    if")
  prefix = CALL.canonical_solution[:k]
  parts = prompts.build_prompt(CALL, prefix=prefix)
  _boundary_ok(parts)
  assert parts.code_prefix == prefix
  assert parts.text.count("def absv(x):") == 1  # the starter code is not repeated
  assert parts.code_prefix + CALL.canonical_solution[k:] == CALL.canonical_solution


def test_humaneval_question_is_not_repeated():
  parts = prompts.build_prompt(HE)
  _boundary_ok(parts)
  assert parts.text.count("Return x plus one.") == 1
  assert parts.code_prefix == HE.starter_code and "`inc`" in parts.head


def test_chat_style_uses_template_and_opens_python_block(chat_tok):
  parts = prompts.build_prompt(CALL, chat_tok, style="chat")
  _boundary_ok(parts)
  assert parts.style == "chat" and not parts.add_special_tokens
  assert parts.text.startswith("<|user|>\nQUESTION:\n" + CALL.question)
  assert parts.head.endswith("<|assistant|>\n```python\n")
  assert parts.stop == ("\n```",)


def test_chat_without_template_falls_back_to_plain():
  parts = prompts.build_prompt(STDIO, tiny_tokenizer(), style="chat")
  assert parts.style == "plain" and parts.text.startswith("QUESTION:\n")


def test_bad_style():
  with pytest.raises(UserError, match="prompt style 'html'"):
    prompts.build_prompt(STDIO, style="html")


def test_long_question_truncated_warned_once_and_counted(caplog):
  tok = tiny_tokenizer()
  long_q = Problem(
    id="t/long/1",
    question="print the sum of all numbers " * 50,
    test_kind="stdio",
    inputs=["1\n"],
    outputs=["1\n"],
  )
  prompts.reset_truncation_stats()
  with caplog.at_level(logging.WARNING, logger="stepcoder_jax.data.prompts"):
    a = prompts.build_prompt(long_q, tok, max_question_tokens=20)
    b = prompts.build_prompt(long_q, tok, max_question_tokens=20)
  assert a.truncated and b.truncated and a.text == b.text
  kept = a.text.split("QUESTION:\n", 1)[1].split(prompts.TRUNCATION_MARK, 1)[0]
  assert long_q.question.startswith(kept)
  assert len(tok(kept, add_special_tokens=False)["input_ids"]) <= 20
  assert len(kept) < len(long_q.question)
  assert prompts.truncation_stats() == {"truncated_prompts": 2, "truncated_problems": 1}
  assert sum("t/long/1" in r.getMessage() for r in caplog.records) == 1
  short = prompts.build_prompt(STDIO, tok, max_question_tokens=200)
  assert not short.truncated and prompts.truncation_stats()["truncated_prompts"] == 2
  prompts.reset_truncation_stats()
  assert prompts.truncation_stats() == {"truncated_prompts": 0, "truncated_problems": 0}


def test_truncation_without_tokenizer_uses_char_estimate():
  p = Problem(id="t/x/2", question="x" * 100, test_kind="stdio", inputs=["1"], outputs=["1"])
  parts = prompts.build_prompt(p, max_question_tokens=5)
  assert parts.truncated and ("x" * 20 + prompts.TRUNCATION_MARK) in parts.text
  assert "x" * 21 not in parts.text
  prompts.reset_truncation_stats()


def test_strip_stop():
  assert prompts.strip_stop("x = 1\n```\nmore", ("\n```",)) == "x = 1"
  assert prompts.strip_stop("x = 1\n", ("\n```", "\nQUESTION:")) == "x = 1\n"
