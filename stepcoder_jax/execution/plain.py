"""Plain data only: what crosses from an untrusted program to the judge.

``plain(x)`` rebuilds a value out of exact builtin types (None, bool, int, float, complex, str,
bytes, list, tuple, set, frozenset, dict), reading subclasses of those through the base type's own
C methods, so a program's overridden ``__eq__``, ``__bool__``, ``__iter__``, ``__str__``... never
run. Anything else raises ``NotData``. The judge then compares these copies, or their JSON
encoding (``encode``), and never an object the program made.
"""

from __future__ import annotations

import json
import math
import sys

_MAX_DEPTH = 100


class NotData(TypeError):
  """The program produced a value that is not plain data."""


_SCALARS = {
  type(None): lambda x: None,
  bool: lambda x: x,
  int: int.__index__,
  float: float.__float__,
  complex: complex.__complex__,
  str: str.__str__,
  bytes: bytes.__bytes__,
}
_BASES = (int, float, complex, str, bytes, list, tuple, dict, set, frozenset)


def _numpy_plain(x, depth):
  """numpy scalars/arrays (trusted C types, exact type checked) -> plain values."""
  np = sys.modules.get("numpy")
  if np is None:
    return None
  t = type(x)
  if t is np.ndarray:
    return True, plain(np.ndarray.tolist(x), depth + 1)
  if t in np.sctypeDict.values() and issubclass(t, np.generic) and t.__module__ == "numpy":
    return True, plain(np.generic.item(x), depth + 1)
  return None


def plain(x, depth: int = 0):
  """A copy of ``x`` made only of exact builtin types; raises NotData otherwise."""
  if depth > _MAX_DEPTH:
    raise NotData("value nested too deeply")
  t = type(x)
  f = _SCALARS.get(t)
  if f is not None:
    return f(x)
  if t is list or t is tuple:
    items = [plain(v, depth + 1) for v in (list.__iter__(x) if t is list else tuple.__iter__(x))]
    return items if t is list else tuple(items)
  if t is dict:
    return {plain(k, depth + 1): plain(v, depth + 1) for k, v in dict.items(x)}
  if t is set:
    return {plain(v, depth + 1) for v in set.__iter__(x)}
  if t is frozenset:
    return frozenset(plain(v, depth + 1) for v in frozenset.__iter__(x))
  got = _numpy_plain(x, depth)
  if got is not None:
    return got[1]
  # Subclasses of builtins (Counter, OrderedDict, defaultdict, namedtuple, IntEnum...): read the
  # base value through the base type's C methods.
  for base in _BASES:
    if isinstance(x, base):
      if base in (int, float, complex, str, bytes):
        return _SCALARS[base](x)
      if base is dict:
        return {plain(k, depth + 1): plain(v, depth + 1) for k, v in dict.items(x)}
      if base is list:
        return [plain(v, depth + 1) for v in list.__iter__(x)]
      if base is tuple:
        return tuple(plain(v, depth + 1) for v in tuple.__iter__(x))
      if base is set:
        return {plain(v, depth + 1) for v in set.__iter__(x)}
      return frozenset(plain(v, depth + 1) for v in frozenset.__iter__(x))
  raise NotData(f"value of type {t.__module__}.{t.__qualname__} is not plain data")


def _tag(x):
  """Plain value -> JSON value; lists for list/tuple (APPS compares them alike)."""
  if x is None or isinstance(x, (bool, str)):
    return x
  if isinstance(x, int):
    return x
  if isinstance(x, float):
    return x if math.isfinite(x) else {"$float": repr(x)}
  if isinstance(x, (list, tuple)):
    return [_tag(v) for v in x]
  if isinstance(x, dict):
    if all(isinstance(k, str) for k in x):
      return {k: _tag(v) for k, v in x.items()}
    return {"$dict": [[_tag(k), _tag(v)] for k, v in x.items()]}
  if isinstance(x, (set, frozenset)):
    return {"$set": [_tag(v) for v in x]}
  if isinstance(x, complex):
    return {"$complex": [x.real, x.imag]}
  if isinstance(x, bytes):
    return {"$bytes": x.decode("latin-1")}
  raise NotData(type(x).__name__)


_esc = json.encoder.encode_basestring_ascii  # the C function, bound now: patching json later
_float_repr, _int_repr = float.__repr__, int.__repr__  # (from the program) cannot reach us


def dump_json(x) -> str:
  """Compact ASCII JSON of plain JSON data, without the (patchable) json module internals."""
  t = type(x)
  if x is None:
    return "null"
  if t is bool:
    return "true" if x else "false"
  if t is int:
    return _int_repr(x)
  if t is float:
    if x != x:
      return "NaN"
    if x in (float("inf"), float("-inf")):
      return "Infinity" if x > 0 else "-Infinity"
    return _float_repr(x)
  if t is str:
    return _esc(x)
  if t is list or t is tuple:
    return "[" + ",".join([dump_json(v) for v in x]) + "]"
  if t is dict:
    return (
      "{" + ",".join([_esc(str.__str__(k)) + ":" + dump_json(v) for k, v in dict.items(x)]) + "}"
    )
  raise NotData(f"cannot write {t.__name__} as JSON")


def encode(x) -> str:
  """JSON text of a plain value (see ``plain``), for the trip to the judge."""
  return dump_json(_tag(plain(x)))
