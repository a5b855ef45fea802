"""Converters (published formats -> Problem) and load_problem_file auto-detection."""

import json
from pathlib import Path

import pytest

from stepcoder_jax.data import converters, load
from stepcoder_jax.data.record import RecordError
from stepcoder_jax.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HUMANEVAL = SHARED / "humaneval" / "HumanEval.jsonl.gz"
MBPP = SHARED / "mbpp" / "mbpp.jsonl"
APPS = SHARED / "apps" / "apps_subset.jsonl"


def _need(path):
  if not path.is_file():
    pytest.skip(f"real data file {path} is absent")


HE_REC = {
  "task_id": "HumanEval/7",
  "prompt": "def inc(x):\n    \"\"\"Add one.\"\"\"\n",
  "canonical_solution": "    return x + 1\n",
  "entry_point": "inc",
  "test": "def check(candidate):\n    assert candidate(1) == 2\n",
}


def test_humaneval_record_runs_standalone():
  p = converters.from_humaneval(HE_REC)
  assert p.id == "HumanEval/7" and p.test_kind == "assert" and p.entry_point == "inc"
  assert p.canonical_solution == HE_REC["prompt"] + HE_REC["canonical_solution"]
  assert p.question == p.starter_code == HE_REC["prompt"]
  ns = {}
  exec(p.canonical_solution + "\n" + p.test_code + f"\ncheck({p.entry_point})\n", ns)  # own data


def test_mbpp_record_joins_asserts_and_normalises_newlines():
  rec = {
    "task_id": 3,
    "text": "Write a function to double x.",
    "code": "def dbl(x):\r\n  return 2*x",
    "test_list": ["assert dbl(1) == 2", "assert dbl(0) == 0"],
    "test_setup_code": "",
    "challenge_test_list": [],
  }
  p = converters.from_mbpp(rec)
  assert p.id == "mbpp/3" and p.entry_point == "dbl"
  assert "\r" not in p.canonical_solution
  assert p.test_code == "assert dbl(1) == 2\nassert dbl(0) == 0"
  assert p.num_tests == 2
  assert p.question.startswith("Write a function to double x.") and "assert dbl(0)" in p.question


def test_apps_json_strings_and_call_kind():
  rec = {
    "problem_id": 5,
    "question": "q",
    "difficulty": "interview",
    "starter_code": "def f(a):\n",
    "solutions": json.dumps(["def f(a):\n    return a\n", "other"]),
    "input_output": json.dumps({"fn_name": "f", "inputs": [[1]], "outputs": [[1]]}),
  }
  p = converters.from_apps(rec)
  assert (p.id, p.test_kind, p.fn_name, p.difficulty) == ("apps/5", "call", "f", "interview")
  assert p.canonical_solution == "def f(a):\n    return a\n"
  rec["input_output"] = json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]})
  assert converters.from_apps(rec).test_kind == "stdio"


def test_apps_bad_difficulty_names_record_and_field():
  rec = {
    "problem_id": 5,
    "question": "q",
    "difficulty": "galactic",
    "input_output": {"inputs": ["1\n"], "outputs": ["1\n"]},
  }
  with pytest.raises(RecordError, match=r"X:3: record 'apps/5': field 'difficulty'"):
    converters.from_apps(rec, where="X:3: ")


def test_apps_plus_spellings_stdio_fixture():
  path = str(FIXTURES / "apps_plus_stdio.json")
  ps = load.load_problem_file(path)
  assert [p.id for p in ps] == ["apps_plus/10", "apps_plus/11", "apps_plus/12", "apps_plus/13"]
  assert all(p.test_kind == "stdio" for p in ps)
  assert [p.difficulty for p in ps] == ["introductory", "interview", "introductory", "competition"]
  assert ps[1].inputs == ["3\n1\n2\n4\n", "1\n7\n"] and ps[1].outputs == ["2\n", "0\n"]
  assert ps[0].canonical_solution.startswith("a, b = map(int")
  assert ps[3].canonical_solution.startswith("n = int(input())")


def test_apps_plus_spellings_call_fixture():
  ps = load.load_problem_file(str(FIXTURES / "apps_plus_call.json"))
  by_id = {p.id: p for p in ps}
  assert sorted(by_id) == ["apps_plus/c1", "apps_plus/c2", "apps_plus/c3"]
  assert {p.fn_name for p in ps} == {"largest", "is_pal", "vowels"}
  assert all(p.test_kind == "call" for p in ps)
  assert by_id["apps_plus/c2"].inputs == [["aba"], ["ab"]]
  # A bare argument becomes a one-argument list.
  assert by_id["apps_plus/c3"].inputs == [["hello"], ["xyz"]]
  assert by_id["apps_plus/c1"].starter_code == "def largest(xs):\n"


def test_apps_plus_bad_record_names_file_index_and_keys():
  path = str(FIXTURES / "apps_plus_bad.json")
  with pytest.raises(UserError) as e:
    load.load_problem_file(path)
  msg = str(e.value)
  assert "apps_plus_bad.json: record 1:" in msg
  assert "['answer', 'body', 'title']" in msg
  assert "\n" not in msg


def test_load_problem_file_our_jsonl_roundtrip(tmp_path):
  p = converters.from_humaneval(HE_REC)
  path = tmp_path / "ours.jsonl"
  path.write_text(p.to_json() + "\n")
  assert load.load_problem_file(str(path)) == [p]


def test_load_problem_file_bad_line_names_file_and_line(tmp_path):
  path = tmp_path / "x.jsonl"
  path.write_text(json.dumps(HE_REC) + "\n{not json\n")
  with pytest.raises(RecordError, match=r"x\.jsonl:2: not valid JSON"):
    load.load_problem_file(str(path))
  path.write_text(json.dumps(HE_REC) + "\n" + json.dumps({"task_id": 1, "text": "t"}) + "\n")
  with pytest.raises(RecordError, match=r"x\.jsonl:2: record is not in the file's format"):
    load.load_problem_file(str(path))


def test_load_problem_file_missing():
  with pytest.raises(UserError, match="no such file"):
    load.load_problem_file("/nonexistent/problems.jsonl")


def test_real_humaneval_gz():
  _need(HUMANEVAL)
  ps = load.load_problem_file(str(HUMANEVAL))
  assert len(ps) == 164 and len({p.id for p in ps}) == 164
  assert all(p.canonical_solution.startswith(p.starter_code) for p in ps)
  assert all(f"def {p.entry_point}" in p.canonical_solution for p in ps)


def test_real_mbpp():
  _need(MBPP)
  ps = load.load_problem_file(str(MBPP))
  assert len(ps) == 974
  assert all(p.entry_point and f"def {p.entry_point}" in p.canonical_solution for p in ps)
  assert all(p.num_tests >= 3 for p in ps)


def test_real_apps_subset_uses_first_passing_solution():
  _need(APPS)
  ps = load.load_problem_file(str(APPS))
  raw = [json.loads(l) for l in APPS.read_text().splitlines() if l.strip()]
  assert len(ps) == len(raw) == 107
  assert sum(p.test_kind == "call" for p in ps) == 9
  for r, p in zip(raw, ps):
    k = r["reference_check"]["first_passing_solution_index_in_first_10"] or 0
    assert p.canonical_solution == r["solutions"][k].replace("\r\n", "\n")
    assert p.id == f"apps/train/{r['problem_id']}"


def test_apps_folder_layout_skips_problems_without_tests():
  ps = load.load_problem_file(str(FIXTURES / "apps_dirs"))
  assert [p.id for p in ps] == ["apps/test/0003", "apps/train/0001", "apps/train/0002"]
  call = ps[2]
  assert call.test_kind == "call" and call.fn_name == "digit_sum" and call.difficulty == "interview"
  assert call.starter_code == "def digit_sum(n):\n"


def test_apps_plus_json_lines_under_json_name(tmp_path):
  recs = json.loads((FIXTURES / "apps_plus_stdio.json").read_text())
  path = tmp_path / "data.json"
  path.write_text("".join(json.dumps(r) + "\n" for r in recs))
  assert [p.id for p in load.load_problem_file(str(path))] == [
    "apps_plus/10",
    "apps_plus/11",
    "apps_plus/12",
    "apps_plus/13",
  ]
  path.write_text('[{"question": 1,\n')
  with pytest.raises(RecordError, match=r"data\.json: not valid JSON \(line 2"):
    load.load_problem_file(str(path))
