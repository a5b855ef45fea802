"""CCCS: statements, stages, prefixes, transitions at rho, JSON state,
prompts that must fit, padding rows, and ablation arms that draw the same problems."""

import json
from pathlib import Path

import pytest

from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError
from stepcoder_jax.rl import cccs, rollout
from stepcoder_jax.rl.config import CCCSConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

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
  return Problem(
    id=pid,
    question="q",
    test_kind="stdio",
    canonical_solution=solution,
    inputs=["1"],
    outputs=["1"],
  )


def _line_starting(text, needle):
  i = text.index(needle)
  return text.rfind("\n", 0, i) + 1


def test_statements_found_with_exact_spans():
  spans = cccs.conditional_statements(PROG, "branching")
  texts = [PROG[s:e] for s, e in spans]
  assert [t.split()[0].rstrip(":") for t in texts] == ["for", "if", "elif", "while", "try"]
  assert texts[0].startswith("for x in xs:") and texts[0].endswith("total -= 1")
  assert texts[1].endswith("total -= 1")  # the if spans its elif branch
  assert texts[2] == "elif x < -5:\n            total -= 1"
  assert texts[3] == "while total > 100:\n        total //= 2"
  assert texts[4].startswith("try:") and texts[4].endswith("y = 0")


def test_statement_kinds_async_with_match_and_no_expressions():
  spans = cccs.conditional_statements(PROG_KINDS, "branching")
  heads = [PROG_KINDS[s:e].split()[0] for s, e in spans]
  # async for, async with, with, match; the comprehension filter and ternary are not statements.
  assert heads == ["async", "async", "with", "match"]
  assert PROG_KINDS[spans[0][0] :].startswith("async for")
  assert PROG_KINDS[spans[1][0] :].startswith("async with")


def test_unicode_offsets_are_characters_not_bytes():
  spans = cccs.conditional_statements(PROG_UNICODE, "branching")
  assert [PROG_UNICODE[s:e] for s, e in spans] == ["if s: print('ä')", "for c in s: pass"]


def test_if_set_counts_if_and_elif_only():
  spans = cccs.conditional_statements(PROG, "if")
  assert [PROG[s:e].split()[0] for s, e in spans] == ["if", "elif"]
  assert cccs.conditional_statements(PROG_KINDS, "if") == []  # ternary, filter: expressions
  assert CCCSConfig().statements == "if"
  with pytest.raises(UserError, match="cccs.statements"):
    CCCSConfig(statements="loops")


def test_no_conditionals_or_unparsable():
  assert cccs.conditional_statements("print(1)\n") == []
  assert cccs.conditional_statements("print 'py2'\n") == []
  assert cccs.plan("x = 1\n").stage_starts == (0,)


# Written from the paper's rule by hand (S = ceil(sqrt(E)) start points, span = ceil(E / S)
# statements apart, from statement E - 1 back): E -> statement indexes in training order.
START_POINTS = {
  0: [],
  1: [0],
  2: [1, 0],
  3: [2, 0],
  4: [3, 1],
  5: [4, 2, 0],
  6: [5, 3, 1],
  7: [6, 3, 0],
  8: [7, 4, 1],
  9: [8, 5, 2],
  10: [9, 6, 3, 0],
  11: [10, 7, 4, 1],
  12: [11, 8, 5, 2],
  13: [12, 8, 4, 0],
  14: [13, 9, 5, 1],
  15: [14, 10, 6, 2],
  16: [15, 11, 7, 3],
  17: [16, 12, 8, 4, 0],
  18: [17, 13, 9, 5, 1],
  19: [18, 14, 10, 6, 2],
  20: [19, 15, 11, 7, 3],
}


@pytest.mark.parametrize("e", sorted(START_POINTS))
def test_stages_follow_the_paper_table(e):
  # A program with E one-line-apart if statements; statement k starts on line 2 + 2k.
  solution = "x = 0\n" + "".join(f"if x == {k}:\n    x += 1\n" for k in range(e))
  lines = cccs._line_starts(solution)
  p = cccs.plan(solution, "if")
  assert len(p.statements) == e
  assert p.stage_starts == tuple(lines[1 + 2 * k] for k in START_POINTS[e]) + (0,)
  assert cccs.start_points(e) == START_POINTS[e]
  cur = cccs.Curriculum(CCCSConfig(rho=0.0, min_attempts=1))
  prob = _problem("t", solution)
  seen = []
  while True:  # training order: every start point, then the question alone
    seen.append(cur.prefix(prob))
    if not cur.record("t", cur.stage(prob), True):
      break
  assert seen == [solution[: lines[1 + 2 * k]] for k in START_POINTS[e]] + [""]


def test_statement_on_line_one_is_not_a_second_final_stage():
  p = cccs.plan("if True:\n    x = 1\n")
  assert len(p.statements) == 1 and p.stage_starts == (0,)


def test_statement_right_after_the_starter_code_is_not_a_second_final_stage():
  # At s* = 0 the prompt already holds the starter code: a prefix of just that is the same prompt.
  solution = "def f(x):\n  if x:\n    return 1\n  return 0\n"
  assert cccs.plan(solution, "if", given="def f(x):\n").stage_starts == (0,)
  assert cccs.plan(solution, "if").stage_starts == (len("def f(x):\n"), 0)  # no starter code
  later = "def f(x):\n  y = x\n  if y:\n    return 1\n  return 0\n"
  assert cccs.plan(later, "if", given="def f(x):\n").stage_starts == (later.index("  if"), 0)
  problem = Problem(
    id="p",
    question="q",
    test_kind="call",
    canonical_solution=solution,
    starter_code="def f(x):\n",
    fn_name="f",
    inputs=[[1]],
    outputs=[1],
  )
  assert cccs.Curriculum(CCCSConfig()).register(problem).num_stages == 1


def test_stage_prefixes_snap_to_line_starts():
  p = cccs.plan(PROG, "branching")
  # E = 5: 3 start points, 2 apart, from the last: statements 4 (try), 2 (elif), 0 (for); then 0.
  assert p.stage_starts == (
    _line_starting(PROG, "try:"),
    _line_starting(PROG, "elif"),
    _line_starting(PROG, "for x"),
    0,
  )
  pre = cccs.prefix_at(PROG, p, 0)
  assert pre.endswith("total //= 2\n") and PROG[len(pre) :].startswith("    try:")
  pre1 = cccs.prefix_at(PROG, p, 1)
  assert pre1.endswith("total += x\n") and PROG[len(pre1) :].startswith("        elif")


def test_curriculum_starts_at_the_last_statement_and_ends_with_question_alone():
  prob = _problem("a", PROG)
  cur = cccs.Curriculum(CCCSConfig(rho=0.5, min_attempts=1, statements="branching"))
  assert cur.stage(prob) == 0
  assert cur.prefix(prob) == PROG[: _line_starting(PROG, "try:")]
  for expected_stage in (1, 2, 3):
    assert cur.record("a", expected_stage - 1, True)
    assert cur.stage(prob) == expected_stage
  assert cur.prefix(prob) == "" and cur.states["a"].final
  assert not cur.record("a", 3, True)  # s* = 0 is final
  assert cur.stage(prob) == 3
  assert cur.histogram() == {"final": 1, "stage_3": 1}


def test_verdicts_count_only_toward_the_stage_they_were_built_at():
  prob = _problem("a", PROG)
  cur = cccs.Curriculum(CCCSConfig(rho=0.5, min_attempts=2, statements="branching"))
  cur.register(prob)
  # Four rows of one iteration, all built at stage 0; the first two move the problem on.
  moved = [cur.record("a", 0, ok) for ok in (True, True, False, False)]
  assert moved == [False, True, False, False]
  assert cur.stage(prob) == 1
  assert (cur.states["a"].attempts, cur.states["a"].passes) == (0, 0)  # stage 1 starts clean
  assert cur.ignored == 2
  assert not cur.record("a", 1, True) and cur.record("a", 1, True)
  assert cur.stage(prob) == 2


def test_transition_only_when_rate_exceeds_rho():
  prob = _problem("a", PROG)
  cur = cccs.Curriculum(CCCSConfig(rho=0.5, min_attempts=2))
  cur.register(prob)
  assert not cur.record("a", 0, True)  # 1/1 but below min_attempts
  assert not cur.record("a", 0, False)  # 1/2 == rho: not yet
  assert cur.stage(prob) == 0
  assert cur.states["a"].attempts == 2 and cur.states["a"].passes == 1
  assert cur.record("a", 0, True)  # 2/3 > rho
  assert cur.stage(prob) == 1
  assert (cur.states["a"].attempts, cur.states["a"].passes) == (0, 0)


def test_min_attempts_delays_transition():
  prob = _problem("a", PROG)
  cur = cccs.Curriculum(CCCSConfig(rho=0.0, min_attempts=3))
  cur.register(prob)
  assert not cur.record("a", 0, True)
  assert not cur.record("a", 0, True)
  assert cur.record("a", 0, True)


def test_no_conditionals_start_at_zero_and_disabled_is_always_zero():
  cur = cccs.Curriculum(CCCSConfig())
  assert cur.stage(_problem("flat", "print(input())\n")) == 0
  off = cccs.Curriculum(CCCSConfig(enabled=False))
  prob = _problem("a", PROG)
  assert off.stage(prob) == 0 and off.prefix(prob) == ""
  for _ in range(10):
    off.record("a", 0, True)
  assert off.stage(prob) == 0 and off.states["a"].final


def test_record_unknown_problem_raises():
  with pytest.raises(KeyError, match="never given a prompt"):
    cccs.Curriculum(CCCSConfig()).record("nope", 0, True)


def test_state_json_roundtrip_is_exact():
  cfg = CCCSConfig(rho=0.5, min_attempts=2)
  cur = cccs.Curriculum(cfg)
  probs = [_problem("a", PROG), _problem("b", PROG_KINDS), _problem("c", "x = 1\n")]
  for p in probs:
    cur.register(p)
  for pid, ok in [("a", True), ("a", True), ("a", False), ("b", True), ("b", False)]:
    cur.record(pid, cur.states[pid].stage, ok)
  text = cur.to_json()
  back = cccs.Curriculum.from_json(text, cfg)
  assert back.states == cur.states
  assert back.to_json() == text
  assert [back.prefix(p) for p in probs] == [cur.prefix(p) for p in probs]
  # The restored state continues identically.
  for c in (cur, back):
    c.record("a", 1, True)
    c.record("a", 1, True)
  assert back.to_json() == cur.to_json()
  assert json.loads(text)["problems"]["a"]["stage"] == 1
  assert json.loads(text)["version"] == cccs.STATE_VERSION == 2


def test_state_json_rejects_old_versions_and_another_statement_set():
  cur = cccs.Curriculum(CCCSConfig())
  cur.register(_problem("a", PROG))
  old = json.loads(cur.to_json())
  old["version"] = 1
  with pytest.raises(UserError, match="version 1"):
    cccs.Curriculum.from_json(json.dumps(old), CCCSConfig())
  with pytest.raises(UserError, match="cccs.statements='if'"):
    cccs.Curriculum.from_json(cur.to_json(), CCCSConfig(statements="branching"))
  # Same set, but the checkpoint was written with CCCS off: one stage where the plan has three.
  off = cccs.Curriculum(CCCSConfig(enabled=False))
  off.register(_problem("a", PROG))
  back = cccs.Curriculum.from_json(off.to_json(), CCCSConfig())
  with pytest.raises(UserError, match="'a' has 1 stage"):
    back.register(_problem("a", PROG))


# ----------------------------------------------------------------------------- prompts that fit

LONG_QUESTION = " ".join(f"word{k}" for k in range(300))
# A solution whose last start point leaves a long prefix: 40 filler lines, then one if.
LONG_SOLUTION = (
  "def f(x):\n"
  + "".join(f"    x = x + {k}\n" for k in range(40))
  + "    if x > 0:\n        return x\n    return -x\n"
)


@pytest.fixture(scope="module")
def tok():
  return pytest.importorskip("stepcoder_jax.models.tokenizer").tiny_tokenizer()


def _ids(tok, text):
  return len(tok(text)["input_ids"])


def test_a_long_question_is_shortened_to_fit_and_counted(tok):
  prob = dataclasses_replace(_problem("long", PROG), question=LONG_QUESTION)
  cur = cccs.Curriculum(CCCSConfig(statements="branching"))
  budget = 220  # the header and the stage prefix take ~160 tiny tokens; a 1090-token question
  items, report = rollout.make_items([prob] * 3, cur, tok, "plain", budget)
  assert len(items) == 3 and not report.skipped
  assert report.shortened == 3 and report.stages_passed_over == 0
  for it in items:
    assert len(it.prompt_ids) <= budget and it.stage == 0
    assert it.prompt.code_prefix == cur.prefix(prob)  # the prefix and the code boundary kept
    assert it.prompt.text.endswith(cur.prefix(prob)) and it.prompt.truncated


def test_a_stage_whose_prefix_cannot_fit_is_passed_over_not_skipped_forever(tok):
  prob = _problem("deep", LONG_SOLUTION)
  cur = cccs.Curriculum(CCCSConfig())
  prefix0 = cur.prefix(prob)
  budget = 200  # the prompt's header alone is ~100 tiny tokens
  assert _ids(tok, prefix0) > budget  # stage 0's prefix alone is over the budget
  items, report = rollout.make_items([prob, prob], cur, tok, "plain", budget)
  assert len(items) == 2 and not report.skipped and report.stages_passed_over == 1
  assert cur.stage(prob) == 1 and cur.states["deep"].final  # moved on, for good
  assert [it.stage for it in items] == [1, 1] and items[0].prompt.code_prefix == ""
  # A problem whose s* = 0 prompt cannot fit (a huge starter code) is the only thing left out.
  huge = dataclasses_replace(_problem("huge", "x = 1\n"), starter_code=LONG_SOLUTION)
  items, report = rollout.make_items([huge], cur, tok, "plain", budget)
  assert not items and [p.id for p in report.skipped] == ["huge"]


def dataclasses_replace(obj, **kw):
  import dataclasses

  return dataclasses.replace(obj, **kw)


def test_padding_rows_are_distinct_unrecorded_copies(tok):
  probs = [_problem(f"p{k}", PROG) for k in range(3)]
  cur = cccs.Curriculum(CCCSConfig(rho=0.0, min_attempts=3, statements="branching"))
  items, _ = rollout.make_items([p for p in probs for _ in range(2)], cur, tok, "plain", 256)
  padded = rollout.pad_items(items, 4)
  assert len(padded) == 8 and padded[:6] == items
  pads = padded[6:]
  assert all(it.padding for it in pads) and not any(it.padding for it in items)
  assert len({id(it) for it in padded}) == 8  # fresh rows, not the same object twice
  assert [it.problem.id for it in pads] == ["p0", "p1"]  # spread over the batch, not items[0]
  assert rollout.pad_items(items, 3) == items
  from stepcoder_jax.rl.rollout import record_verdicts

  record_verdicts(cur, padded, [True] * 8)
  # Two verdicts per problem were recorded: below min_attempts = 3 even for p0 and p1.
  assert {k: (st.attempts, st.stage) for k, st in cur.states.items()} == {
    "p0": (2, 0),
    "p1": (2, 0),
    "p2": (2, 0),
  }


# ----------------------------------------------------------------------------- ablation arms


def _bindings(path: Path) -> dict[str, str]:
  out = {}
  for line in path.read_text().splitlines():
    line = line.split("#")[0].strip()
    if line:
      name, value = (x.strip() for x in line.split("=", 1))
      out[name] = value
  return out


def test_ablation_arms_differ_only_in_the_two_switches():
  arms = {
    a: _bindings(CONFIGS / "ablations" / f"{a}.gin") for a in ("ppo", "cccs", "fgo", "stepcoder")
  }
  assert {a: b for a, b in arms.items()} == {
    "ppo": {"cccs.enabled": "False", "fgo.enabled": "False"},
    "cccs": {"cccs.enabled": "True", "fgo.enabled": "False"},
    "fgo": {"cccs.enabled": "False", "fgo.enabled": "True"},
    "stepcoder": {"cccs.enabled": "True", "fgo.enabled": "True"},
  }


def test_ppo_and_stepcoder_arms_draw_the_same_problems_for_10_iterations():
  import gin

  from stepcoder_jax import gin_setup
  from stepcoder_jax.rl.config import TrainConfig
  from stepcoder_jax.runs.trainer import choose_problems

  # Problems with 0 to 11 conditionals: a complexity-weighted draw would tell them apart.
  probs = [_problem(f"p{k}", "x = 0\n" + "if x:\n    x = 1\n" * k) for k in range(12)]
  flat = [_problem(p.id, "x = 0\n") for p in probs]
  draws = {}
  for arm in ("ppo", "stepcoder"):
    gin.clear_config()
    gin_setup.parse(["experiments/tiny_cpu.gin", f"ablations/{arm}.gin"], [])
    cfg, arm_cccs = TrainConfig(), CCCSConfig()
    assert arm_cccs.enabled == (arm == "stepcoder")
    draws[arm] = [[p.id for p in choose_problems(probs, 4, cfg.seed, it)] for it in range(10)]
    # The draw does not depend on the solutions (no weighting by their conditionals).
    assert draws[arm] == [
      [p.id for p in choose_problems(flat, 4, cfg.seed, it)] for it in range(10)
    ]
  gin.clear_config()
  assert draws["ppo"] == draws["stepcoder"]
  assert len({tuple(d) for d in draws["ppo"]}) > 1  # the draw changes between iterations
