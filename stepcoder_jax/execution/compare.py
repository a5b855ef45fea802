"""APPS-compatible output comparison, done by the judge (never inside the program's process).

Standard input/output (``stdio_equal``), in the spirit of APPS ``testing_util``:
  1. the outputs' lines, each stripped, empty lines dropped, are equal; else
  2. their whitespace-separated tokens are equal; else
  3. the token lists have equal length and every pair is equal as text or, when both parse as
     floats, within ``abs(a - b) <= abs_tol + rel_tol * abs(b)`` (numpy.allclose's rule and
     defaults: rel_tol 1e-5, abs_tol 1e-8).

Call-based (``call_equal``): the program's return value (decoded from the plain-data JSON the
harness wrote) equals the expected JSON value, where tuples and lists are alike, ints and floats
compare numerically (floats with the tolerance above), ``bool`` equals ``int`` as in Python; or,
since APPS stores many expected values wrapped in a one-element list, it equals ``expected[0]``.
"""

from __future__ import annotations

import json
import math


def decode(text: str):
  """JSON written by ``plain.encode`` -> plain Python values (tuples already lists)."""

  def untag(v):
    if isinstance(v, list):
      return [untag(x) for x in v]
    if isinstance(v, dict):
      if len(v) == 1:
        ((k, x),) = v.items()
        if k == "$float":
          return float(x)
        if k == "$set":
          return {"$set": [untag(y) for y in x]}
        if k == "$dict":
          return {"$dict": [[untag(a), untag(b)] for a, b in x]}
        if k == "$complex":
          return complex(*x)
        if k == "$bytes":
          return x.encode("latin-1")
      return {k: untag(x) for k, x in v.items()}
    return v

  return untag(json.loads(text))


def _num_close(a, b, rel_tol, abs_tol) -> bool:
  if isinstance(a, float) or isinstance(b, float):
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
      return False
    if math.isinf(a) or math.isinf(b):
      return a == b
    return abs(a - b) <= abs_tol + rel_tol * abs(b)
  return a == b


def values_equal(a, b, rel_tol: float = 1e-5, abs_tol: float = 1e-8, depth: int = 0) -> bool:
  """Python-like equality of two plain JSON-ish values, lists == tuples, float tolerance."""
  if depth > 200:
    return False
  num = (int, float)
  if isinstance(a, num) and isinstance(b, num):
    return _num_close(a, b, rel_tol, abs_tol)
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(
      values_equal(x, y, rel_tol, abs_tol, depth + 1) for x, y in zip(a, b)
    )
  if isinstance(a, dict) and isinstance(b, dict):
    if "$set" in a or "$set" in b or "$dict" in a or "$dict" in b:
      return _canon(a) == _canon(b)
    return a.keys() == b.keys() and all(
      values_equal(a[k], b[k], rel_tol, abs_tol, depth + 1) for k in a
    )
  if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
    return False
  return a == b


def _canon(v):
  """A comparable canonical form for tagged sets/dicts (exact, no tolerance)."""
  return json.dumps(v, sort_keys=True)


def call_equal(got, expected, rel_tol: float = 1e-5, abs_tol: float = 1e-8) -> bool:
  """APPS call-based rule: equal, or equal to the single element of a wrapped expected list."""
  if values_equal(got, expected, rel_tol, abs_tol):
    return True
  if isinstance(expected, list) and len(expected) == 1:
    return values_equal(got, expected[0], rel_tol, abs_tol)
  return False


def _as_float(tok: str) -> float | None:
  try:
    return float(tok)
  except ValueError:
    return None


def stdio_equal(got: str, expected, rel_tol: float = 1e-5, abs_tol: float = 1e-8) -> bool:
  """APPS stdio rule (see module docstring). ``expected`` may be a string or a list of lines."""
  if isinstance(expected, list):
    expected = "\n".join(str(x) for x in expected)
  g_lines = [l.strip() for l in got.splitlines() if l.strip()]
  e_lines = [l.strip() for l in str(expected).splitlines() if l.strip()]
  if g_lines == e_lines:
    return True
  g_tok, e_tok = got.split(), str(expected).split()
  if g_tok == e_tok:
    return True
  if len(g_tok) != len(e_tok):
    return False
  for a, b in zip(g_tok, e_tok):
    if a == b:
      continue
    fa, fb = _as_float(a), _as_float(b)
    if fa is None or fb is None or not _num_close(fa, fb, rel_tol, abs_tol):
      return False
  return True
