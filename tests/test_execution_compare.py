"""Output comparison (APPS rules) and plain-data copies, without processes."""

import math

import pytest

from stepcoder_jax.execution import compare, plain
from stepcoder_jax.execution.reward import reward
from stepcoder_jax.execution.config import RewardConfig


def test_stdio_whitespace_and_lines():
  assert compare.stdio_equal("1 2\n3\n\n", "1 2\n3")
  assert compare.stdio_equal("  1   2 \r\n3  ", "1 2\n3\n")
  assert compare.stdio_equal("1\n2", "1 2")  # token rule
  assert not compare.stdio_equal("1 2", "1 3")
  assert not compare.stdio_equal("", "0")


def test_stdio_float_tolerance_is_numpy_allclose_like():
  assert compare.stdio_equal("0.3333333", "0.33333333333")
  assert compare.stdio_equal("1000000.0", "1000000.001")  # rel 1e-5
  assert not compare.stdio_equal("1.01", "1.0")
  assert compare.stdio_equal("nan", "nan")  # same text
  assert not compare.stdio_equal("nan", "1.0")
  assert not compare.stdio_equal("abc 1.0", "abd 1.0")


def test_call_wrapped_single_element_and_tuples():
  assert compare.call_equal([1, 2], [1, 2])
  assert compare.call_equal(5, [5])  # APPS wraps outputs in a one-element list
  assert compare.call_equal([[1, 2]], [[1, 2]])
  assert compare.call_equal(compare.decode(plain.encode((1, (2, 3)))), [1, [2, 3]])
  assert compare.call_equal(True, 1)  # Python equality
  assert compare.call_equal(0.1 + 0.2, 0.3)
  assert not compare.call_equal("1", 1)
  assert not compare.call_equal([1, 2], [2, 1])
  assert not compare.call_equal({"a": 1}, {"a": 2})


def test_plain_reads_subclasses_through_base_methods():
  class Liar(int):
    def __eq__(self, other):
      return True

    __hash__ = int.__hash__

  class LyingList(list):
    def __iter__(self):
      return iter([42])

  got = plain.plain([Liar(3), LyingList([1, 2]), {"k": (Liar(1),)}])
  assert got == [3, [1, 2], {"k": (1,)}]
  assert type(got[0]) is int and type(got[1]) is list
  with pytest.raises(plain.NotData):
    plain.plain(object())

  class AlwaysEqual:
    def __eq__(self, other):
      return True

  with pytest.raises(plain.NotData):
    plain.plain([AlwaysEqual()])


def test_encode_decode_round_trip_special_values():
  for v in [
    None,
    True,
    3,
    2.5,
    "s",
    [1, [2]],
    {"a": [1]},
    {1: 2},
    {1, 2},
    b"\x00\xff",
    complex(1, 2),
    float("inf"),
  ]:
    d = compare.decode(plain.encode(v))
    if isinstance(v, (set, dict)) and not (
      isinstance(v, dict) and all(isinstance(k, str) for k in v)
    ):
      assert isinstance(d, dict)  # tagged: compared canonically
    else:
      assert d == v
  assert math.isnan(compare.decode(plain.encode(float("nan"))))


def test_reward_scheme_defaults_and_config():
  assert [reward(o) for o in ("passed", "failed", "runtime_error", "timeout", "compile_error")] == [
    1.0,
    -0.3,
    -0.6,
    -0.6,
    -1.0,
  ]
  assert reward("failed", RewardConfig(failed=-0.5)) == -0.5
  with pytest.raises(ValueError):
    reward("nope")
