"""What a compiled program does, read from its optimized HLO text (`compiled.as_text()`).

XLA's own `cost_analysis()` counts the body of a loop once, whatever its trip count, and returns
nothing on GPU. Here the module's computations are parsed into a call graph, each computation's
own work is measured, and a loop body's work is multiplied by its trip count:

- FLOPs: matrix products only (`dot`, `convolution`, cuBLAS gemm custom calls): 2 x output
  elements x contracted size. Element-wise work is left out (a small share for a transformer).
- Bytes: the HBM traffic of the top-level operations (fusions and unfused ops read their operands
  and write their results; what happens inside a fusion stays on chip; an in-place update or a
  slice moves only the slice), XLA's own cost model.
- Collectives by kind (all-gather, all-reduce, reduce-scatter, all-to-all, collective-permute):
  count, operand bytes and result bytes per device.

Trip counts: the `known_trip_count` XLA records (GPU), else a loop whose condition compares its
counter with a constant (TPU); loops whose bound is data (the sampler's decode loop stops when
every row is done) take `default_trip_count` and are reported as such.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
# Ops that move no data of their own (aliases, control, bookkeeping).
_FREE = {
  "parameter",
  "constant",
  "get-tuple-element",
  "tuple",
  "bitcast",
  "while",
  "conditional",
  "call",
  "after-all",
  "partition-id",
  "replica-id",
  "opt-barrier",
  "add-dependency",
  "domain",
  "iota",
}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s+\(.*\)\s+->\s+.*\{\s*$")
_INSTR = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s+=\s+(.*)$")


def _bits(dtype: str) -> float:
  if dtype == "pred":
    return 8
  if dtype == "token":
    return 0
  m = re.match(r"[a-z]+(\d+)", dtype)
  return float(m.group(1)) if m else 0.0


def arrays(shape: str) -> list[tuple[str, tuple[int, ...]]]:
  """(dtype, dims) of every array in an HLO shape string (tuples flattened)."""
  out = []
  for dtype, dims in _ARRAY.findall(shape):
    out.append((dtype, tuple(int(d) for d in dims.split(",") if d)))
  return out


def shape_bytes(shape: str) -> float:
  return sum(math.prod(d) * _bits(t) / 8 for t, d in arrays(shape))


def _balanced(s: str, start: int) -> int:
  """Index just past the bracket group opening at s[start]."""
  pairs = {"(": ")", "{": "}", "[": "]"}
  stack = []
  for i in range(start, len(s)):
    c = s[i]
    if c in pairs:
      stack.append(pairs[c])
    elif stack and c == stack[-1]:
      stack.pop()
      if not stack:
        return i + 1
  return len(s)


def _split_top(s: str) -> list[str]:
  """Split at commas outside brackets."""
  parts, depth, cur = [], 0, []
  for c in s:
    if c in "([{":
      depth += 1
    elif c in ")]}":
      depth -= 1
    if c == "," and depth == 0:
      parts.append("".join(cur))
      cur = []
    else:
      cur.append(c)
  if "".join(cur).strip():
    parts.append("".join(cur))
  return parts


@dataclasses.dataclass
class Instr:
  name: str
  shape: str
  opcode: str
  operands: list[str]
  attrs: str
  root: bool = False

  def callees(self, key: str) -> list[str]:
    m = re.search(rf"\b{key}=(\{{[^}}]*\}}|%?[\w.\-]+)", self.attrs)
    if not m:
      return []
    return [n.strip().lstrip("%") for n in m.group(1).strip("{}").split(",") if n.strip()]


@dataclasses.dataclass
class Computation:
  name: str
  instrs: list[Instr]
  shapes: dict[str, str]
  entry: bool = False

  def get(self, name: str) -> Instr | None:
    for ins in self.instrs:
      if ins.name == name:
        return ins
    return None


def parse(text: str) -> dict[str, Computation]:
  """The module's computations by name."""
  comps: dict[str, Computation] = {}
  cur = None
  for line in text.splitlines():
    if cur is None:
      m = _HEADER.match(line)
      if m:
        cur = Computation(m.group(2), [], {}, entry=bool(m.group(1)))
      continue
    if line.strip() == "}":
      comps[cur.name] = cur
      cur = None
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, rest = m.group(2), m.group(3).strip()
    if rest.startswith("("):
      end = _balanced(rest, 0)
    else:
      end = rest.find(" ")
    shape, rest = rest[:end], rest[end:].strip()
    om = re.match(r"([\w\-]+)\(", rest)
    if not om:
      continue
    close = _balanced(rest, om.end() - 1)
    operands = [
      p.split()[-1].lstrip("%") for p in _split_top(rest[om.end() : close - 1]) if p.split()
    ]
    ins = Instr(name, shape, om.group(1), operands, rest[close:], root=bool(m.group(1)))
    cur.instrs.append(ins)
    cur.shapes[name] = shape
  return comps


@dataclasses.dataclass
class Stats:
  """Work of a computation per execution (or of a whole program)."""

  flops: float = 0.0
  bytes: float = 0.0
  collectives: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)

  def add(self, other: "Stats", times: float = 1.0) -> None:
    self.flops += times * other.flops
    self.bytes += times * other.bytes
    for kind, v in other.collectives.items():
      mine = self.collectives.setdefault(
        kind, {"count": 0.0, "operand_bytes": 0.0, "result_bytes": 0.0}
      )
      for k in mine:
        mine[k] += times * v[k]

  @property
  def collective_bytes(self) -> float:
    return sum(v["operand_bytes"] for v in self.collectives.values())

  def to_json(self) -> dict:
    return {
      "flops": self.flops,
      "bytes_accessed": self.bytes,
      "collective_bytes": self.collective_bytes,
      "collectives": {k: dict(v) for k, v in sorted(self.collectives.items())},
    }


@dataclasses.dataclass
class Loop:
  """One while loop: its trip count and the work of one iteration (body and callees)."""

  name: str
  trip_count: int
  known: bool
  per_iteration: Stats


def _dims_of(comp: Computation, name: str) -> tuple[int, ...]:
  a = arrays(comp.shapes.get(name, ""))
  return a[0][1] if a else ()


def _int_list(attrs: str, key: str) -> list[int]:
  m = re.search(rf"\b{key}=\{{([0-9,]*)\}}", attrs)
  return [int(x) for x in m.group(1).split(",") if x] if m else []


def _window(attrs: str, key: str, n: int, default: int) -> list[int]:
  m = re.search(rf"\b{key}=([\d_x-]+)", attrs)
  if not m:
    return [default] * n
  return [int(x) for x in m.group(1).split("x")]


def _conv_flops(comp: Computation, ins: Instr, out: tuple[int, ...]) -> float:
  """2 x multiply-adds of a convolution that touch data (not padding, not dilation holes).

  TPU writes batched matrix products as convolutions whose window runs over a batch dimension
  with lhs dilation, where most window taps fall into holes; counting window size x outputs
  would overstate them several times. Per spatial dimension the (output, tap) pairs that read a
  real input element are counted exactly; dimensions are independent, so they multiply.
  """
  if len(ins.operands) < 2:
    return 0.0
  lhs, rhs = _dims_of(comp, ins.operands[0]), _dims_of(comp, ins.operands[1])
  m = re.search(r"dim_labels=([^_]*)_([^-]*)->(\S+?)[,\s]", ins.attrs + " ")
  if not lhs or not rhs or not m:
    return 0.0
  ll, rl, ol = m.groups()
  if len(ll) != len(lhs) or len(rl) != len(rhs) or len(ol) != len(out) or "i" not in rl:
    return 0.0
  dims = sorted(c for c in rl if c.isdigit())
  n = len(dims)
  pads = re.search(r"\bpad=([\d_x-]+)", ins.attrs)
  pad = (
    [tuple(int(v) for v in p.split("_")) for p in pads.group(1).split("x")]
    if pads
    else [(0, 0)] * n
  )
  stride, ldil, rdil = (_window(ins.attrs, k, n, 1) for k in ("stride", "lhs_dilate", "rhs_dilate"))
  pairs = 1
  for j, d in enumerate(dims):
    size_in, k, size_out = lhs[ll.index(d)], rhs[rl.index(d)], out[ol.index(d)]
    last = (size_in - 1) * ldil[j]
    pos = np.arange(size_out)[:, None] * stride[j] + np.arange(k)[None, :] * rdil[j] - pad[j][0]
    pairs *= int(np.count_nonzero((pos >= 0) & (pos <= last) & (pos % ldil[j] == 0)))
  per_spatial = math.prod(out[ol.index(d)] for d in dims) or 1
  return 2.0 * math.prod(out) / per_spatial * rhs[rl.index("i")] * pairs


def _instr_flops(comp: Computation, ins: Instr) -> float:
  out = arrays(ins.shape)
  if not out:
    return 0.0
  if ins.opcode == "dot":
    lhs = _dims_of(comp, ins.operands[0])
    k = math.prod(lhs[d] for d in _int_list(ins.attrs, "lhs_contracting_dims") if d < len(lhs))
    return 2.0 * math.prod(out[0][1]) * k
  if ins.opcode == "convolution":
    return _conv_flops(comp, ins, out[0][1])
  if ins.opcode == "custom-call" and re.search(
    r'custom_call_target="[^"]*(gemm|matmul)', ins.attrs, re.I
  ):
    lhs = _dims_of(comp, ins.operands[0])
    m = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', ins.attrs)
    dims = [int(x.strip('" ')) for x in m.group(1).split(",") if x.strip('" ')] if m else []
    k = math.prod(lhs[d] for d in dims if d < len(lhs))
    return 2.0 * math.prod(out[0][1]) * k
  return 0.0


def _int_constant(ins: Instr | None) -> int | None:
  if ins is None or ins.opcode != "constant" or not ins.operands:
    return None
  try:
    return int(ins.operands[0])
  except ValueError:
    return None


def _trip_count(comps: dict[str, Computation], caller: Computation, ins: Instr) -> int | None:
  """Iterations of a while loop, when they do not depend on data."""
  m = re.search(r'"known_trip_count":\{"n":"(\d+)"', ins.attrs)
  if m:
    return int(m.group(1))
  cond = comps.get((ins.callees("condition") or [""])[0])
  root = next((i for i in cond.instrs if i.root), None) if cond else None
  # A counter (tuple element) compared LT with a constant, counting up by one from its start.
  if root is None or root.opcode != "compare" or "direction=LT" not in root.attrs:
    return None
  lhs, rhs = (cond.get(n) for n in root.operands[:2])
  bound = _int_constant(rhs)
  if lhs is None or lhs.opcode != "get-tuple-element" or bound is None:
    return None
  start = 0
  k = re.search(r"index=(\d+)", lhs.attrs)
  init = caller.get(ins.operands[0]) if ins.operands else None
  if k and init is not None and init.opcode == "tuple" and int(k.group(1)) < len(init.operands):
    start = _int_constant(caller.get(init.operands[int(k.group(1))])) or 0
  return max(0, bound - start)


class Analysis:
  """A compiled module's totals, with loops multiplied out.

  Args:
    text: `compiled.as_text()`.
    default_trip_count: iterations assumed for a loop whose bound is not a constant.
  """

  def __init__(self, text: str, default_trip_count: int = 1):
    self.comps = parse(text)
    self.default_trip_count = default_trip_count
    self.loops: list[Loop] = []
    self._memo: dict[tuple[str, bool], Stats] = {}
    entry = next((c for c in self.comps.values() if c.entry), None)
    if entry is None:
      raise ValueError("no ENTRY computation in the HLO text")
    self.total = self._stats(entry.name, control=True)

  def _local(self, comp: Computation, control: bool) -> Stats:
    st = Stats()
    for ins in comp.instrs:
      st.flops += _instr_flops(comp, ins)
      op = ins.opcode
      base = op[: -len("-start")] if op.endswith("-start") else op
      if base in COLLECTIVES:
        operand = sum(shape_bytes(comp.shapes.get(o, "")) for o in ins.operands)
        result = shape_bytes(ins.shape)
        if op.endswith("-start") and ins.shape.startswith("("):
          result = max(0.0, result - operand)  # (operand, result[, scratch]) of an async start
        c = st.collectives.setdefault(
          base, {"count": 0.0, "operand_bytes": 0.0, "result_bytes": 0.0}
        )
        c["count"] += 1
        c["operand_bytes"] += operand
        c["result_bytes"] += result
      if control and op not in _FREE and not op.endswith("-done"):
        st.bytes += self._traffic(comp, ins)
    return st

  def _traffic(self, comp: Computation, ins: Instr) -> float:
    """HBM bytes one top-level op reads and writes. In-place updates and slices move only the
    slice: a dynamic-update-slice (the KV cache's new column, a loop's output row) writes its
    update, not the whole buffer; a dynamic-slice reads what it returns. Inside a fusion the
    same holds for the fused parameters used only that way (XLA's cost model does likewise)."""
    size = lambda name: shape_bytes(comp.shapes.get(name, ""))
    op = ins.opcode
    if op == "dynamic-update-slice":
      return 2 * size(ins.operands[1]) if len(ins.operands) > 1 else 0.0
    if op == "dynamic-slice":
      return 2 * shape_bytes(ins.shape)
    operand = [size(o) for o in ins.operands]
    out = shape_bytes(ins.shape)
    if op.endswith("-start") and ins.shape.startswith("("):
      return sum(operand) + max(0.0, out - sum(operand))
    fused = self.comps.get((ins.callees("calls") or [""])[0]) if op == "fusion" else None
    if fused is not None:
      params = {
        i.name: int(i.operands[0])
        for i in fused.instrs
        if i.opcode == "parameter" and i.operands and i.operands[0].isdigit()
      }
      users: dict[str, list[tuple[Instr, int]]] = {}
      for i in fused.instrs:
        for k, o in enumerate(i.operands):
          users.setdefault(o, []).append((i, k))
      for name, idx in params.items():
        uses = users.get(name, [])
        if idx >= len(operand) or not uses:
          continue
        if all(u.opcode == "dynamic-slice" and k == 0 for u, k in uses):
          operand[idx] = sum(shape_bytes(u.shape) for u, _ in uses)
        elif all(u.opcode == "dynamic-update-slice" and k == 0 for u, k in uses):
          operand[idx] = 0.0  # the buffer updated in place: its write is the output below
      root = next((i for i in fused.instrs if i.root), None)
      parts = (
        [root]
        if root is not None and root.opcode != "tuple"
        else [fused.get(n) for n in (root.operands if root is not None else [])]
      )
      if parts and all(p is not None for p in parts):
        out = sum(
          shape_bytes(fused.shapes.get(p.operands[1], ""))
          if p.opcode == "dynamic-update-slice" and len(p.operands) > 1
          else shape_bytes(p.shape)
          for p in parts
        )
    return sum(operand) + out

  def _stats(self, name: str, control: bool) -> Stats:
    key = (name, control)
    if key in self._memo:
      return self._memo[key]
    comp = self.comps[name]
    st = self._local(comp, control)
    for ins in comp.instrs:
      if ins.opcode == "while":
        body = ins.callees("body")
        if not body:
          continue
        trips = _trip_count(self.comps, comp, ins)
        known = trips is not None
        trips = trips if known else self.default_trip_count
        per = Stats()
        per.add(self._stats(body[0], control))
        for c in ins.callees("condition"):
          per.add(self._stats(c, control))
        self.loops.append(Loop(ins.name, trips, known, per))
        st.add(per, trips)
      elif ins.opcode == "conditional":
        branches = ins.callees("branch_computations") or (
          ins.callees("true_computation") + ins.callees("false_computation")
        )
        if branches:  # the most expensive branch: a bound for any taken one
          st.add(max((self._stats(b, control) for b in branches), key=lambda s: s.flops))
      elif ins.opcode == "call":
        for c in ins.callees("to_apply"):
          st.add(self._stats(c, control))
      else:
        for c in ins.callees("calls"):  # fusions and async wrappers: work, not traffic
          if c in self.comps:
            st.add(self._stats(c, False))
    self._memo[key] = st
    return st

  def main_loop(self, unknown_only: bool = True) -> Loop | None:
    """The loop with the most work per iteration (among those with a data-dependent bound)."""
    cands = [l for l in self.loops if not (unknown_only and l.known)]
    return max(cands, key=lambda l: (l.per_iteration.flops, l.per_iteration.bytes), default=None)
