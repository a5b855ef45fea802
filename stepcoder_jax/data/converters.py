"""Published dataset records -> our Problem record.

One function per source format. Each takes the raw record (a dict as parsed from JSON) and a
``where`` string ("FILE:LINE: " or "FILE: record 12: ") that every error message starts with, so a
user can find the record. ``detect_format`` guesses the format of a raw record from its keys.

Normalisations (all documented here so that the judges need not know the sources):
  * Windows line endings in code and tests become ``\\n`` (MBPP ships ``\\r\\n``); CCCS offsets and
    FGO line numbers then agree with what the judge runs.
  * HumanEval: ``canonical_solution`` is prompt + body so it runs standalone; ``starter_code`` is
    the prompt (the model continues after it); ``question`` is the prompt as well.
  * MBPP: the question is the task text followed by the three test asserts (the prompt of Austin et
    al. 2021, which names the function). ``challenge_test_list`` is not judged (it is empty for all
    but a few tasks and those extra tests are not part of the standard benchmark).
  * APPS: ``solutions``/``input_output`` may be JSON strings (original release) or decoded values
    (HF exports). The canonical solution is ``solutions[0]``, or the first passing one when the
    record carries ``reference_check.first_passing_solution_index_in_first_10``.
  * APPS+: key names are undocumented, so each field accepts several natural spellings
    (``APPS_PLUS_KEYS``).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from stepcoder_jax.data.record import DIFFICULTIES, Problem, RecordError

# Synonyms seen in code-contest datasets -> our difficulty names.
_DIFFICULTY_ALIASES = {
  "introductory": "introductory",
  "intro": "introductory",
  "easy": "introductory",
  "interview": "interview",
  "medium": "interview",
  "competition": "competition",
  "hard": "competition",
  "unknown": "unknown",
  "": "unknown",
}

# APPS+ field -> accepted spellings, in order of preference.
APPS_PLUS_KEYS = {
  "question": ("question", "problem", "prompt", "description", "problem_description", "text"),
  "solution": ("canonical_solution", "solution", "solutions", "code", "canonical_code"),
  "fn_name": ("fn_name", "function_name", "entry_point", "func_name"),
  "tests": ("input_output", "io", "tests", "test_cases"),
  "starter_code": ("starter_code", "starter", "starter_codes"),
  "difficulty": ("difficulty", "level"),
  "id": ("id", "problem_id", "task_id", "idx"),
}


def _lf(s: str) -> str:
  return s.replace("\r\n", "\n")


def _difficulty(value: Any, where: str, rid: Any) -> str:
  if value is None:
    return "unknown"
  key = str(value).strip().lower()
  if key not in _DIFFICULTY_ALIASES:
    raise RecordError(
      f"{where}record {rid!r}: field 'difficulty' is {value!r}; expected one of {DIFFICULTIES}"
    )
  return _DIFFICULTY_ALIASES[key]


def _maybe_json(value: Any, where: str, rid: Any, field: str) -> Any:
  """Decode a JSON string field (APPS original) or pass a decoded value through."""
  if isinstance(value, str):
    if not value.strip():
      return None
    try:
      return json.loads(value)
    except json.JSONDecodeError as e:
      raise RecordError(
        f"{where}record {rid!r}: field '{field}' is not valid JSON ({e.msg})"
      ) from None
  return value


def _require(rec: dict, keys: tuple[str, ...], where: str, fmt: str) -> None:
  missing = [k for k in keys if k not in rec]
  if missing:
    raise RecordError(f"{where}{fmt} record is missing field(s) {missing}; it has {sorted(rec)}")


def _entry_from_asserts(test_code: str, code: str) -> str | None:
  """The first function called by the asserts that the solution defines (MBPP has no field)."""
  called = re.findall(r"([A-Za-z_]\w*)\s*\(", test_code)
  defined = set(re.findall(r"^\s*def\s+([A-Za-z_]\w*)", code, flags=re.M))
  for name in called:
    if name in defined:
      return name
  return None


def from_humaneval(rec: dict, where: str = "") -> Problem:
  """A HumanEval record (task_id, prompt, canonical_solution, test, entry_point)."""
  _require(
    rec, ("task_id", "prompt", "canonical_solution", "test", "entry_point"), where, "HumanEval"
  )
  prompt = _lf(rec["prompt"])
  return _make(
    where,
    id=str(rec["task_id"]),
    question=prompt,
    test_kind="assert",
    canonical_solution=prompt + _lf(rec["canonical_solution"]),
    starter_code=prompt,
    test_code=_lf(rec["test"]),
    entry_point=rec["entry_point"],
    source="humaneval",
  )


def from_mbpp(rec: dict, where: str = "") -> Problem:
  """An MBPP record (task_id, text, code, test_list, test_setup_code, challenge_test_list)."""
  _require(rec, ("task_id", "text", "code", "test_list"), where, "MBPP")
  tests = [_lf(t) for t in rec["test_list"]]
  test_code = "\n".join(tests)
  question = rec["text"].strip() + "\nYour code should pass these tests:\n" + test_code
  return _make(
    where,
    id=f"mbpp/{rec['task_id']}",
    question=question,
    test_kind="assert",
    canonical_solution=_lf(rec["code"]),
    test_code=test_code,
    test_setup_code=_lf(rec.get("test_setup_code") or ""),
    entry_point=_entry_from_asserts(test_code, rec["code"]),
    source="mbpp",
  )


def from_apps(rec: dict, where: str = "", id_prefix: str = "apps") -> Problem:
  """An APPS record: question, solutions, input_output (JSON strings or decoded), difficulty."""
  _require(rec, ("question", "input_output"), where, "APPS")
  pid = rec.get("problem_id", rec.get("id"))
  rid = f"{id_prefix}/{rec['split']}/{pid}" if rec.get("split") else f"{id_prefix}/{pid}"
  io = _maybe_json(rec["input_output"], where, rid, "input_output")
  if not isinstance(io, dict) or "inputs" not in io or "outputs" not in io:
    raise RecordError(f"{where}record {rid!r}: field 'input_output' has no inputs/outputs")
  sols = _maybe_json(rec.get("solutions"), where, rid, "solutions") or []
  if isinstance(sols, str):
    sols = [sols]
  check = rec.get("reference_check")
  if isinstance(check, str):  # some exports keep it as a Python-repr string; ignore those
    check = None
  k = (check or {}).get("first_passing_solution_index_in_first_10")
  k = k if isinstance(k, int) and 0 <= k < len(sols) else 0
  fn_name = io.get("fn_name")
  return _make(
    where,
    id=rid,
    question=rec["question"],
    test_kind="call" if fn_name else "stdio",
    canonical_solution=_lf(sols[k]) if sols else "",
    starter_code=_lf(rec.get("starter_code") or ""),
    fn_name=fn_name or None,
    inputs=list(io["inputs"]),
    outputs=list(io["outputs"]),
    difficulty=_difficulty(rec.get("difficulty"), where, rid),
    source=rec.get("source") or "apps",
  )


def _pick(rec: dict, field: str) -> tuple[str | None, Any]:
  for k in APPS_PLUS_KEYS[field]:
    if k in rec:
      return k, rec[k]
  return None, None


def from_apps_plus(rec: dict, index: int, path: str) -> Problem:
  """An APPS+ record (undocumented keys: each field accepts the spellings in APPS_PLUS_KEYS).

  Args:
    rec: the raw record.
    index: its 0-based position in the file (used for the id when it has none, and in errors).
    path: the file it came from (named in errors).
  """
  where = f"{path}: record {index}: "
  if not isinstance(rec, dict):
    raise RecordError(f"{where}is a {type(rec).__name__}, expected a JSON object")
  keys = sorted(rec)
  _, question = _pick(rec, "question")
  sol_key, sol = _pick(rec, "solution")
  tests_key, tests = _pick(rec, "tests")
  if tests_key is None and "inputs" in rec and "outputs" in rec:
    tests = {"inputs": rec["inputs"], "outputs": rec["outputs"]}
  if not isinstance(question, str) or tests is None:
    need = []
    if not isinstance(question, str):
      need.append("question (one of " + "/".join(APPS_PLUS_KEYS["question"]) + ")")
    if tests is None:
      need.append("tests (inputs+outputs or one of " + "/".join(APPS_PLUS_KEYS["tests"]) + ")")
    raise RecordError(
      f"{where}matches no APPS+ spelling: missing {', '.join(need)}; the record has keys {keys}"
    )
  _, raw_id = _pick(rec, "id")
  rid = f"apps_plus/{raw_id if raw_id is not None else index}"
  tests = _maybe_json(tests, where, rid, tests_key or "inputs")
  if not isinstance(tests, dict) or "inputs" not in tests or "outputs" not in tests:
    raise RecordError(
      f"{where}record {rid!r}: tests field has no inputs/outputs; the record has keys {keys}"
    )
  if sol_key == "solutions" and isinstance(sol, str):  # APPS style: a JSON list in a string
    sol = _maybe_json(sol, where, rid, sol_key)
  if isinstance(sol, list):
    sol = sol[0] if sol else ""
  if sol is not None and not isinstance(sol, str):
    raise RecordError(f"{where}record {rid!r}: canonical solution is a {type(sol).__name__}")
  _, fn_name = _pick(rec, "fn_name")
  fn_name = fn_name or tests.get("fn_name") or None
  _, starter = _pick(rec, "starter_code")
  if isinstance(starter, list):
    starter = starter[0] if starter else ""
  _, diff = _pick(rec, "difficulty")
  inputs, outputs = list(tests["inputs"]), list(tests["outputs"])
  if fn_name:  # a bare single argument is one argument, not an argument list
    inputs = [a if isinstance(a, list) else [a] for a in inputs]
  return _make(
    where,
    id=rid,
    question=question,
    test_kind="call" if fn_name else "stdio",
    canonical_solution=_lf(sol or ""),
    starter_code=_lf(starter or ""),
    fn_name=fn_name,
    inputs=inputs,
    outputs=outputs,
    difficulty=_difficulty(diff, where, rid),
    source="apps_plus",
  )


def _make(where: str, **fields) -> Problem:
  try:
    p = Problem(**fields)
  except RecordError as e:
    raise RecordError(f"{where}{e}") from None
  return p


def from_problem(rec: dict, where: str = "") -> Problem:
  """Our own record (Problem.to_dict())."""
  return Problem.from_dict(rec, where=where)


CONVERTERS: dict[str, Callable[[dict, str], Problem]] = {
  "problem": from_problem,
  "humaneval": from_humaneval,
  "mbpp": from_mbpp,
  "apps": from_apps,
}


def detect_format(rec: dict) -> str | None:
  """Name of the format a raw record is in ('problem', 'humaneval', 'mbpp', 'apps'), or None.

  APPS+ is not detected from a single record: its keys overlap APPS; use from_apps_plus directly.
  """
  if not isinstance(rec, dict):
    return None
  keys = set(rec)
  if {"id", "question", "test_kind"} <= keys:
    return "problem"
  if {"task_id", "prompt", "canonical_solution", "test", "entry_point"} <= keys:
    return "humaneval"
  if {"task_id", "text", "code", "test_list"} <= keys:
    return "mbpp"
  if {"question", "input_output"} <= keys:
    return "apps"
  return None
