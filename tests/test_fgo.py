"""FGO: executed lines -> per-token mask, with the documented rules."""

import numpy as np
import pytest

from stepcoder_jax.errors import UserError
from stepcoder_jax.rl import fgo

CODE = (
  "n = int(input())\n"  # 1 executed
  "if n > 0:\n"  # 2 executed
  "    print('pos')\n"  # 3 executed
  "else:\n"  # 4 not a statement line
  "    # negative\n"  # 5 comment
  "    print('neg')\n"  # 6 dead
  "    n = -n\n"  # 7 dead
  "\n"  # 8 blank
  "print(n)\n"
)  # 9 executed
EXECUTED = {1, 2, 3, 9}
EXECUTABLE = {1, 2, 3, 6, 7, 9}


def _line_tokens(text):
  """Offsets of one token per line body and one per newline (plus the indentation)."""
  offs, i = [], 0
  for line in text.split("\n")[:-1]:
    body = line.lstrip(" ")
    ind = len(line) - len(body)
    if ind:
      offs.append((i, i + ind))
    if body:
      offs.append((i + ind, i + len(line)))
    offs.append((i + len(line), i + len(line) + 1))
    i += len(line) + 1
  return offs


def _text_of(offsets, mask, keep):
  return [CODE[a:b] for (a, b), m in zip(offsets, mask) if m == keep]


def test_unexecuted_code_lines_are_masked_and_others_kept():
  offs = _line_tokens(CODE) + [(len(CODE), len(CODE))]  # EOS: empty span
  m = fgo.token_mask(CODE, offs, EXECUTED, EXECUTABLE, "failed")
  assert m.dtype == np.int8 and m.shape == (len(offs),)
  assert _text_of(offs, m, 0) == ["    ", "print('neg')", "\n", "    ", "n = -n", "\n"]
  kept = "".join(_text_of(offs, m, 1))
  assert "else:" in kept and "# negative" in kept and "print('pos')" in kept
  assert m[-1] == 1  # EOS


def test_multi_line_tokens_kept_if_any_line_is_kept():
  nl3 = CODE.index("\n", CODE.index("'pos'"))  # end of line 3 (executed)
  nl6 = CODE.index("\n", CODE.index("'neg'"))  # end of line 6 (dead)
  nl7 = CODE.index("\n", CODE.index("n = -n"))  # end of line 7 (dead)
  offs = [
    (nl3, nl3 + 3),  # executed line 3 -> line 4: kept
    (nl6, nl6 + 5),  # dead 6 -> dead 7 indentation: masked
    (nl7, nl7 + 2),  # dead 7 -> blank 8: kept
    (nl6 - 3, nl7 + 1),  # 6 .. 7 (nl7 is line 7's own newline): masked
    (nl6 - 3, nl7 + 2),  # 6 .. 8: kept (8 is blank)
  ]
  m = fgo.token_mask(CODE, offs, EXECUTED, EXECUTABLE, "failed")
  assert m.tolist() == [1, 0, 1, 0, 1]


@pytest.mark.parametrize(
  "executed, outcome, enabled, measured",
  [
    (EXECUTED, "compile_error", True, None),  # no coverage possible
    (None, "timeout", True, None),  # coverage lost
    (set(), "runtime_error", True, False),  # coverage not measured (switched off)
    (EXECUTED, "failed", False, True),  # FGO off
  ],
)
def test_all_ones_cases(executed, outcome, enabled, measured):
  offs = _line_tokens(CODE)
  m = fgo.token_mask(
    CODE, offs, executed, EXECUTABLE, outcome, enabled=enabled, coverage_measured=measured
  )
  assert m.tolist() == [1] * len(offs)


@pytest.mark.parametrize("outcome", ["runtime_error", "failed", "timeout", "passed"])
def test_ran_but_never_reached_the_completion_is_all_zeros(outcome):
  # e.g. the CCCS prefix raised or returned before the completion's first line
  offs = _line_tokens(CODE) + [(len(CODE), len(CODE))]  # EOS too: the paper masks everything
  m = fgo.token_mask(CODE, offs, [], EXECUTABLE, outcome, coverage_measured=True)
  assert m.tolist() == [0] * len(offs)
  assert fgo.token_mask(CODE, offs, [], None, outcome).tolist() == [0] * len(offs)


def test_completion_without_code_lines_keeps_its_tokens():
  text = "# nothing to run\n"
  offs = [(0, len(text) - 1), (len(text) - 1, len(text)), (len(text), len(text))]
  assert fgo.token_mask(text, offs, [], [], "passed", coverage_measured=True).tolist() == [1] * 3


def test_fgo_without_coverage_is_a_configuration_error():
  fgo.check_config(True, True)
  fgo.check_config(False, False)
  with pytest.raises(UserError, match=r"^gin fgo.enabled = True needs execution.coverage = True"):
    fgo.check_config(True, False)


def test_fully_executed_program_is_all_ones():
  offs = _line_tokens(CODE)
  m = fgo.token_mask(CODE, offs, EXECUTABLE, EXECUTABLE, "passed")
  assert m.all()


def test_fallback_executable_lines_skip_blank_and_comments():
  assert fgo.code_lines(CODE) == {1, 2, 3, 4, 6, 7, 9}
  offs = _line_tokens(CODE)
  m = fgo.token_mask(CODE, offs, EXECUTED, None, "failed")
  masked = _text_of(offs, m, 0)
  assert "else:" in masked and "# negative" not in masked and "print('neg')" in masked


def test_with_tiny_tokenizer_offsets():
  tiny = pytest.importorskip("stepcoder_jax.models.tokenizer").tiny_tokenizer()
  offs = [tuple(o) for o in tiny(CODE, return_offsets_mapping=True)["offset_mapping"]]
  assert "".join(CODE[a:b] for a, b in offs) == CODE
  m = fgo.token_mask(CODE, offs, EXECUTED, EXECUTABLE, "failed")
  line_of = lambda c: CODE.count("\n", 0, c) + 1
  for (a, b), k in zip(offs, m):
    lines = set(range(line_of(a), line_of(b - 1) + 1))
    assert k == (0 if lines <= {6, 7} else 1), (CODE[a:b], lines)
  assert 0 < m.sum() < len(m)
  assert fgo.mask_density([m, np.ones(4, np.int8)]) == pytest.approx((m.sum() + 4) / (len(m) + 4))
