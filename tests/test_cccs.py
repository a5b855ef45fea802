"""CCCS: statements, stages, prefixes, transitions at rho, JSON state, prompt tokens untrained."""
import json

import numpy as np
import pytest

from stepcoder_jax.data.record import Problem
from stepcoder_jax.rl import cccs
from stepcoder_jax.rl.config import CCCSConfig

PROG = """\
def f(xs):
    total = 0
    for x in xs:
        if x > 0:
            total += x
        elif x < -5:
            total -= 1
    while total > 100:
        total //= 2
    try:
        y = 1 / total
    except ZeroDivisionError:
        y = 0
    return y
"""

PROG_KINDS = """\
import contextlib
async def g(it, v):
    async for a in it:
        pass
    async with contextlib.nullcontext():
        pass
    with open("x") as fh:
        data = fh.read()
    match v:
        case 1:
            return [i for i in range(3) if i]
        case _:
            return 1 if v else 2
"""

PROG_UNICODE = "s = 'héllo wörld'  # ünïcode\nif s: print('ä')\nfor c in s: pass\n"


def _problem(pid, solution):
  return Problem(id=pid, question="q", test_kind="stdio", canonical_solution=solution,
                 inputs=["1"], outputs=["1"])


def _line_starting(text, needle):
  i = text.index(needle)
  return text.rfind("\n", 0, i) + 1


def test_statements_found_with_exact_spans():
  spans = cccs.conditional_statements(PROG)
  texts = [PROG[s:e] for s, e in spans]
  assert [t.split()[0].rstrip(":") for t in texts] == ["for", "if", "elif", "while", "try"]
  assert texts[0].startswith("for x in xs:") and texts[0].endswith("total -= 1")
  assert texts[1].endswith("total -= 1")  # the if spans its elif branch
  assert texts[2] == "elif x < -5:\n            total -= 1"
  assert texts[3] == "while total > 100:\n        total //= 2"
  assert texts[4].startswith("try:") and texts[4].endswith("y = 0")


def test_statement_kinds_async_with_match_and_no_expressions():
  spans = cccs.conditional_statements(PROG_KINDS)
  heads = [PROG_KINDS[s:e].split()[0] for s, e in spans]
  # async for, async with, with, match; the comprehension filter and ternary are not statements.
  assert heads == ["async", "async", "with", "match"]
  assert PROG_KINDS[spans[0][0]:].startswith("async for")
  assert PROG_KINDS[spans[1][0]:].startswith("async with")


def test_unicode_offsets_are_characters_not_bytes():
  spans = cccs.conditional_statements(PROG_UNICODE)
  assert [PROG_UNICODE[s:e] for s, e in spans] == ["if s: print('ä')", "for c in s: pass"]


def test_no_conditionals_or_unparsable():
  assert cccs.conditional_statements("print(1)\n") == []
  assert cccs.conditional_statements("print 'py2'\n") == []
  assert cccs.plan("x = 1\n").stage_starts == (0,)


@pytest.mark.parametrize("e, stages, span", [
    (0, 1, 0), (1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 2, 2), (5, 3, 2), (9, 3, 3), (10, 4, 3),
    (17, 5, 4)])
def test_stage_counts_and_spans(e, stages, span):
  assert cccs.num_stages(e) == stages
  assert cccs.stage_span(e) == span


def test_stage_prefixes_snap_to_line_starts():
  p = cccs.plan(PROG)
  # E = 5: 3 stages of span 2; stage 1 starts at statement 2 (elif), stage 2 at statement 4 (try).
  assert p.stage_starts == (0, _line_starting(PROG, "elif"), _line_starting(PROG, "try:"))
  pre = cccs.prefix_at(PROG, p, 2)
  assert pre.endswith("total //= 2\n") and PROG[len(pre):].startswith("    try:")
  pre1 = cccs.prefix_at(PROG, p, 1)
  assert pre1.endswith("total += x\n") and PROG[len(pre1):].startswith("        elif")


def test_curriculum_starts_late_and_ends_with_question_alone():
  prob = _problem("a", PROG)
  cur = cccs.Curriculum(CCCSConfig(rho=0.5, min_attempts=1))
  assert cur.stage(prob) == 2
  assert cur.prefix(prob) == PROG[:_line_starting(PROG, "try:")]
  for expected_stage in (1, 0):
    assert cur.record("a", True)
    assert cur.stage(prob) == expected_stage
  assert cur.prefix(prob) == ""
  assert not cur.record("a", True)  # s* = 0 is final
  assert cur.stage(prob) == 0


def test_transition_only_when_rate_exceeds_rho():
  prob = _problem("a", PROG)
  cur = cccs.Curriculum(CCCSConfig(rho=0.5, min_attempts=2))
  cur.register(prob)
  assert not cur.record("a", True)   # 1/1 but below min_attempts
  assert not cur.record("a", False)  # 1/2 == rho: not yet
  assert cur.stage(prob) == 2
  assert cur.states["a"].attempts == 2 and cur.states["a"].passes == 1
  assert cur.record("a", True)       # 2/3 > rho
  assert cur.stage(prob) == 1
  assert (cur.states["a"].attempts, cur.states["a"].passes) == (0, 0)


def test_min_attempts_delays_transition():
  prob = _problem("a", PROG)
  cur = cccs.Curriculum(CCCSConfig(rho=0.0, min_attempts=3))
  cur.register(prob)
  assert not cur.record("a", True)
  assert not cur.record("a", True)
  assert cur.record("a", True)


def test_no_conditionals_start_at_zero_and_disabled_is_always_zero():
  cur = cccs.Curriculum(CCCSConfig())
  assert cur.stage(_problem("flat", "print(input())\n")) == 0
  off = cccs.Curriculum(CCCSConfig(enabled=False))
  prob = _problem("a", PROG)
  assert off.stage(prob) == 0 and off.prefix(prob) == ""
  for _ in range(10):
    off.record("a", True)
  assert off.stage(prob) == 0


def test_record_unknown_problem_raises():
  with pytest.raises(KeyError, match="never given a prompt"):
    cccs.Curriculum().record("nope", True)


def test_state_json_roundtrip_is_exact():
  cfg = CCCSConfig(rho=0.5, min_attempts=2)
  cur = cccs.Curriculum(cfg)
  probs = [_problem("a", PROG), _problem("b", PROG_KINDS), _problem("c", "x = 1\n")]
  for p in probs:
    cur.register(p)
  for pid, ok in [("a", True), ("a", True), ("a", False), ("b", True), ("b", False)]:
    cur.record(pid, ok)
  text = cur.to_json()
  back = cccs.Curriculum.from_json(text, cfg)
  assert back.states == cur.states
  assert back.to_json() == text
  assert [back.prefix(p) for p in probs] == [cur.prefix(p) for p in probs]
  # The restored state continues identically.
  for c in (cur, back):
    c.record("b", True)
    c.record("b", True)
  assert back.to_json() == cur.to_json()
  assert json.loads(text)["problems"]["a"]["stage"] == 1


def test_sampling_weights_grow_with_conditionals():
  probs = [_problem("flat", "x = 1\n"), _problem("a", PROG), _problem("b", PROG_KINDS)]
  w = cccs.sampling_weights(probs, 1.0)
  assert np.isclose(w.sum(), 1.0)
  np.testing.assert_allclose(w, np.array([1, 6, 5]) / 12)
  np.testing.assert_allclose(cccs.sampling_weights(probs, 0.0), np.full(3, 1 / 3))
  cur = cccs.Curriculum(CCCSConfig(weight_power=1.0))
  np.testing.assert_allclose(cur.sampling_weights(probs), w)
  w2 = cccs.sampling_weights(probs, 2.0)
  assert w2[1] / w2[0] == pytest.approx(36.0)


def test_prefix_tokens_never_trainable_with_tiny_tokenizer():
  tiny = pytest.importorskip("stepcoder_jax.models.tokenizer").tiny_tokenizer()
  prob = _problem("a", PROG)
  cur = cccs.Curriculum(CCCSConfig())
  prefix = cur.prefix(prob)
  assert prefix
  question = "Sum positives.\n```python\n"
  prompt = question + prefix
  completion = PROG[len(prefix):]
  # As in a rollout: the prompt is tokenized alone, the completion is what the policy generated.
  p_off = tiny(prompt, return_offsets_mapping=True)["offset_mapping"]
  c_off = tiny(completion, return_offsets_mapping=True)["offset_mapping"]
  text = prompt + completion
  offsets = [tuple(o) for o in p_off] + [(a + len(prompt), b + len(prompt)) for a, b in c_off]
  offsets.append((len(text), len(text)))  # EOS after the completion: an empty span
  mask = cccs.trainable_token_mask(offsets, len(prompt))
  assert mask.dtype == np.int8 and mask.sum() == len(c_off) + 1
  assert not mask[:len(p_off)].any()  # no question or prefix token is trainable
  assert mask[-1] == 1  # EOS is trained
  trained = "".join(text[a:b] for m, (a, b) in zip(mask, offsets) if m)
  assert trained == completion
  # Statement spans map to tokens through the same offsets.
  s, e = cccs.conditional_statements(PROG)[-1]
  i, j = cccs.char_span_to_tokens(offsets, len(question) + s, len(question) + e)
  assert text[offsets[i][0]:offsets[j - 1][1]].strip().startswith("try:")
  assert text[offsets[i][0]:offsets[j - 1][1]].rstrip().endswith("y = 0")
  assert all(mask[i:j])  # the try statement lies in the completion the policy trains on
  # Tokenized jointly, a token merged across the prompt/completion seam stays prompt.
  joint = [tuple(o) for o in tiny(text, return_offsets_mapping=True)["offset_mapping"]]
  jmask = cccs.trainable_token_mask(joint, len(prompt))
  seam = [t for t, (a, b) in enumerate(joint) if a < len(prompt) < b]
  assert seam and all(jmask[t] == 0 for t in seam)
  for m, (a, b) in zip(jmask, joint):
    assert not (m and a < len(prompt))
