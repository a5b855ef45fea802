"""Checks on the call-based half of the bundled problem set (stepcoder_jax/data/builtin/call.jsonl).

The set trains a small model, so besides well-formedness these tests pin the difficulty mix and
that every canonical solution has the branches/loops the CCCS curriculum splits on.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap

import pytest

from stepcoder_jax.data.record import Problem, read_jsonl

CALL_JSONL = os.path.join(
  os.path.dirname(__file__), os.pardir, "stepcoder_jax", "data", "builtin", "call.jsonl"
)
NUM_PROBLEMS = 85
CONTROL_FLOW = (ast.If, ast.For, ast.While)

# Runs in a fresh interpreter: each canonical solution in its own namespace, every test compared
# after a JSON round trip (the record stores outputs as JSON values, e.g. tuples become lists).
_RUNNER = textwrap.dedent("""
  import json, sys
  failures = []
  for rec in json.load(sys.stdin):
    ns = {"__name__": "__main__"}
    try:
      exec(compile(rec["canonical_solution"], rec["id"], "exec"), ns)
      fn = ns[rec["fn_name"]]
    except Exception as e:
      failures.append([rec["id"], "load", repr(e)])
      continue
    for i, (args, want) in enumerate(zip(rec["inputs"], rec["outputs"])):
      try:
        got = json.loads(json.dumps(fn(*json.loads(json.dumps(args)))))
      except Exception as e:
        failures.append([rec["id"], i, repr(e)])
        continue
      if got != want or type(got) is not type(want):
        failures.append([rec["id"], i, f"got {got!r}, want {want!r}"])
  print(json.dumps(failures))
""")


@pytest.fixture(scope="module")
def raw_records() -> list[dict]:
  with open(CALL_JSONL, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
  return read_jsonl(CALL_JSONL)


def test_every_line_loads_and_validates(raw_records):
  assert len(raw_records) == NUM_PROBLEMS
  for d in raw_records:
    p = Problem.from_json(json.dumps(d))
    p.validate()
    assert p.test_kind == "call"
    assert p.source == "stepcoder_builtin"
    assert p.difficulty in ("introductory", "interview")
    assert p.question.strip() and "Example" in p.question, p.id
    assert p.fn_name in p.question, p.id


def test_ids_unique_and_sequential(problems):
  ids = [p.id for p in problems]
  assert ids == [f"builtin/call/{k:04d}" for k in range(1, NUM_PROBLEMS + 1)]
  assert len({p.fn_name for p in problems}) == NUM_PROBLEMS


def test_starter_code_is_signature_prefix(problems):
  for p in problems:
    assert p.starter_code.startswith(f"def {p.fn_name}("), p.id
    assert p.starter_code.endswith(":\n") and p.starter_code.count("\n") == 1, p.id
    assert p.canonical_solution.startswith(p.starter_code), p.id


def test_canonical_solutions_have_control_flow(problems):
  """CCCS splits on conditionals, so each solution needs at least one if/for/while."""
  for p in problems:
    tree = ast.parse(p.canonical_solution)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert [f.name for f in funcs] == [p.fn_name], p.id
    assert any(isinstance(n, CONTROL_FLOW) for n in ast.walk(tree)), p.id
    assert not any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree)), p.id


def test_enough_tests_each(problems):
  for p in problems:
    assert p.num_tests >= 5, p.id
    assert all(isinstance(a, list) for a in p.inputs), p.id


def test_difficulty_mix(problems):
  """~30 very easy + ~30 easy (introductory) and ~25 interview, in that order."""
  levels = [p.difficulty for p in problems]
  assert levels.count("introductory") == 60
  assert levels.count("interview") == 25
  assert levels == ["introductory"] * 60 + ["interview"] * 25
  # The very easy group really is short: a few lines of logic each.
  for p in problems[:30]:
    body_lines = p.canonical_solution.strip().splitlines()[1:]
    assert len(body_lines) <= 8, p.id


def test_canonical_solutions_pass_all_tests(raw_records):
  proc = subprocess.run(
    [sys.executable, "-c", _RUNNER],
    input=json.dumps(raw_records),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr
  failures = json.loads(proc.stdout)
  assert failures == []


def test_runner_catches_a_wrong_expected_output(raw_records):
  """The runner above must be able to fail: corrupt one expected value and expect a report."""
  bad = json.loads(json.dumps(raw_records[:2]))
  bad[1]["outputs"][0] = "not the answer"
  proc = subprocess.run(
    [sys.executable, "-c", _RUNNER],
    input=json.dumps(bad),
    capture_output=True,
    text=True,
    timeout=900,
  )
  failures = json.loads(proc.stdout)
  assert [f[:2] for f in failures] == [[bad[1]["id"], 0]]
