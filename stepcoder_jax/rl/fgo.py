"""FGO: Fine-Grained Optimization (StepCoder, arXiv 2402.01391, Sec. 3.3).

The unit tests run under line coverage. Code that no test executed did not influence the reward,
so its tokens get no policy gradient: they are masked out of the policy loss. The mask is an array
operand of the jitted PPO step, so FGO off is the same compiled function with a mask of ones.

Rules of `token_mask` (1 = the token is trained, 0 = masked out):

* FGO disabled -> all ones.
* ``compile_error``, or coverage not measured (``coverage_measured`` False: coverage switched off
  or lost) -> all ones: nothing says which code was dead, and the reward (-1 for a syntax error)
  is about the whole program.
* The program ran under coverage but executed no line of the completion (it failed or returned
  before reaching it) -> all zeros, EOS included: the paper's rule, since nothing the policy
  wrote influenced the reward. (A completion with no executable line at all keeps all ones:
  no code of it went unexecuted.)
* A token is masked only if every completion line it touches is *unexecuted code*: a line the
  coverage tool lists as executable that no test executed.
* A token spanning several lines (e.g. ``"\\n    "`` = the end of one line and the indentation of
  the next) is kept if any of its lines is kept.
* Blank, comment-only and other non-executable lines (``else:``, ``finally:``, a docstring's
  inner lines) keep their tokens: they are not "unexecuted code", and masking the newlines and
  indentation around live code would stop the policy from learning the layout that makes it
  parse. A multi-line statement is executable on every one of its lines (execution/lines.py: a
  unit spans lineno..end_lineno), so the continuation lines of an unexecuted one are masked with
  its first line, and those of an executed one are trained.
* Special tokens with an empty character span (EOS) are kept: EOS decides where the program ends,
  which always matters to the reward.
* Tokens past the end of the completion text (none normally) are kept.

Line numbers follow the execution contract: 1-based, in the completion's own coordinates (line 1
holds the completion's first character). Token offsets are character (start, end) offsets into
the completion, as given by a fast tokenizer's offset mapping.
"""

from __future__ import annotations

from typing import Collection, Iterable, Sequence

import numpy as np

from stepcoder_jax.errors import UserError


def check_config(enabled: bool, coverage: bool) -> None:
  """FGO needs line coverage: with `execution.coverage` off every mask would silently be ones."""
  if enabled and not coverage:
    raise UserError(
      "gin fgo.enabled = True needs execution.coverage = True (FGO masks the lines "
      "no test executed); set fgo.enabled = False for plain PPO"
    )


def code_lines(completion: str) -> set[int]:
  """Fallback executable lines: every line that is not blank or comment-only (1-based)."""
  out = set()
  for i, line in enumerate(completion.split("\n"), 1):
    s = line.strip()
    if s and not s.startswith("#"):
      out.add(i)
  return out


def token_mask(
  completion: str,
  token_offsets: Sequence[tuple[int, int]] | np.ndarray,
  executed_lines: Iterable[int] | None,
  executable_lines: Iterable[int] | None,
  outcome: str,
  enabled: bool = True,
  coverage_measured: bool | None = None,
) -> np.ndarray:
  """Per-token FGO mask of one completion (see the module docstring for the rules).

  Args:
    completion: the generated text (without the prompt or CCCS prefix).
    token_offsets: (start, end) char offsets of each generated token in `completion`.
    executed_lines: completion lines that some test executed (1-based); None = no coverage.
    executable_lines: completion lines the coverage tool considers statements; None falls back
      to `code_lines(completion)`.
    outcome: the execution outcome (``passed``, ``failed``, ``runtime_error``, ``timeout``,
      ``compile_error``).
    enabled: False gives all ones (FGO off).
    coverage_measured: whether the run measured coverage (`ExecResult.coverage_state`); None
      derives it: `executed_lines` given and the program compiled.

  Returns:
    np.int8 array [len(token_offsets)].
  """
  offsets = np.asarray(token_offsets, np.int64).reshape(-1, 2)
  n = offsets.shape[0]
  ones = np.ones(n, np.int8)
  if coverage_measured is None:
    coverage_measured = executed_lines is not None
  if not enabled or outcome == "compile_error" or not coverage_measured:
    return ones
  executed = set(executed_lines or ())
  executable = set(executable_lines) if executable_lines is not None else code_lines(completion)
  if not executed and executable:
    return np.zeros(n, np.int8)  # ran, but never reached the completion
  dead = executable - executed  # unexecuted code lines
  if not dead:
    return ones
  # line_of[c] = 1-based line of char c; a newline belongs to the line it ends.
  newlines = np.frombuffer(completion.encode("utf-32-le"), np.uint32) == ord("\n")
  line_of = np.concatenate([[1], 1 + np.cumsum(newlines)[:-1]]) if len(completion) else np.ones(0)
  out = ones.copy()
  for t, (a, b) in enumerate(offsets):
    if b <= a or a >= len(completion):
      continue  # special token (EOS) or past the text
    lines = range(int(line_of[a]), int(line_of[min(b, len(completion)) - 1]) + 1)
    if all(l in dead for l in lines):
      out[t] = 0
  return out


def mask_density(masks: Collection[np.ndarray]) -> float:
  """Fraction of kept tokens over a collection of masks (a metric)."""
  total = sum(len(m) for m in masks)
  return float(sum(int(m.sum()) for m in masks) / total) if total else 1.0
