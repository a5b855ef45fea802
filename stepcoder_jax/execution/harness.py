"""Runs one program's tests inside its sandboxed child process and reports raw observations.

The harness never decides a verdict for stdio and call-based tests (it never sees the expected
outputs): it reports what the program printed or returned, as plain data, to a pipe whose number
the program is not told, each record tagged with a per-program nonce. The judge (worker) compares.
Assert-style tests (HumanEval/MBPP) must run next to the program; there the harness reports pass/
fail per test, after making sure every value that crosses from program to test code is a fresh
plain-data copy (``plain.plain``), so ``__eq__``/``__bool__`` tricks cannot pass an assert, and
after restoring any stdlib module the test code reads that the program monkeypatched.

Everything the harness calls after untrusted code starts is bound at import time (module globals
here are unreachable from the program: frame and gc introspection are refused by the audit hook
and the harness's modules are removed from ``sys.modules``), and this module's builtins are a
private copy, so patching ``builtins`` or ``os`` does not reach it.

Parsing, coverage instrumentation and compiling happen in the worker (``prepare``), not here: the
child receives code objects (marshal) and only runs them, so it touches few copy-on-write pages.

Records (one JSON line each, ``NONCE\\t{...}``): ``setup_error``, ``start`` / ``end`` per test,
``timeout``, ``done``.

A program cut short keeps what its earlier tests established: a verdict reaches the worker
before any more program code runs, and a timer (SIGALRM at the time limit) interrupts the program,
so that the harness sends the coverage reached so far in a ``timeout`` record and exits. The
worker's SIGKILL, a moment later, stays the fallback for a program that blocks the timer or
catches the interrupt. The handler is ``signal.default_int_handler`` (it raises
KeyboardInterrupt), installed only while program code runs: a handler of ours would be reachable
from the program (``signal.getsignal``), and with it whatever it refers to.
"""

from __future__ import annotations

import ast
import builtins
import functools
import io
import json
import marshal
import os
import signal
import sys
import time
import types
import warnings

from stepcoder_jax.execution import lines as _lines_mod
from stepcoder_jax.execution import plain as _plain_mod

__builtins__ = dict(vars(builtins))  # pylint: disable=redefined-builtin  # private copy
_PRISTINE_BUILTINS = dict(vars(builtins))  # given to test code, never to the program

_write, _read, _close, _dup2, _open, _lseek = (
  os.write,
  os.read,
  os.close,
  os.dup2,
  os.open,
  os.lseek,
)
_exit = os._exit
_setitimer, _set_handler, _interrupt = signal.setitimer, signal.signal, signal.default_int_handler
_ITIMER_REAL, _SIGALRM, _SIG_IGN = signal.ITIMER_REAL, signal.SIGALRM, signal.SIG_IGN
_perf = time.perf_counter
_monotonic = time.monotonic
_dumps = _plain_mod.dump_json  # not json.dumps: the program may patch the json module
_loads = json.loads
_int = int
_mloads = marshal.loads
_unpack_len = int.from_bytes
_plain, _encode, _NotData = _plain_mod.plain, _plain_mod.encode, _plain_mod.NotData
_instrument, _PROBE = _lines_mod.instrument, _lines_mod.PROBE
_ModuleType = types.ModuleType
_BaseException_str = BaseException.__str__
_TextIOWrapper, _FileIO, _BufferedWriter, _BufferedReader = (
  io.TextIOWrapper,
  io.FileIO,
  io.BufferedWriter,
  io.BufferedReader,
)
_flush = io.TextIOWrapper.flush  # unbound: an instance attribute set by the program is ignored
_ORIG_STDOUT = sys.__stdout__
_O_RW_NEW = os.O_RDWR | os.O_CREAT | os.O_TRUNC
_get_traceback = BaseException.__dict__["__traceback__"].__get__

PROGRAM_FILE = "<program>"
MAX_WARNINGS = 8  # compile warnings kept per program (each cut to max_error_chars)
MAX_PROGRAM_CHARS = 1 << 20  # a model's completion is a few KB; 1M chars parse in ~0.4 s
TESTS_FILE = "<tests>"

# Modules whose attributes the program could patch to fool test code; restored before tests.
_GUARDED_MODULES = (
  "math",
  "cmath",
  "random",
  "re",
  "string",
  "collections",
  "itertools",
  "functools",
  "heapq",
  "bisect",
  "operator",
  "copy",
  "statistics",
  "fractions",
  "decimal",
  "typing",
  "hashlib",
  "numpy",
)

# The names APPS' testing_util puts in front of every program (no textual prefix: line numbers
# must stay the program's own).
_APPS_HEADER = """
import sys, time, itertools, collections, math, fractions, random, heapq, bisect, string, re
from itertools import accumulate, product, permutations, combinations
from collections import Counter, OrderedDict, deque, defaultdict, ChainMap
from functools import lru_cache, reduce, cmp_to_key
from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2, inf
from typing import List, Tuple, Dict, Set, Optional
from heapq import heappush, heappop, heapify, heappushpop, nlargest, nsmallest
"""
_APPS_HEADER_CODE = compile(_APPS_HEADER, "<apps-header>", "exec")


_FLUSH_EVERY_S = 0.05


class _Reporter:
  """Writes nonce-tagged JSON lines to the private result pipe.

  Records are buffered and written at most every 50 ms (and at the end, and before program code
  runs while a verdict waits, see ``Harness._untrusted``): each write wakes the worker, and on a
  busy host every wake-up costs a context switch both ways. Records carry the monotonic clock, so
  the worker times each test from its real start; its SIGKILL comes 0.2 s after the limit it
  knows of, which lags at most 50 ms, and the child's own timer fires at the limit itself.
  ``known_tm`` is when the worker last heard of the child (it sent the job).
  """

  def __init__(self, fd: int, nonce: str, known_tm: float):
    self.fd, self.nonce = fd, nonce
    self.buf: list[str] = []
    self.last = known_tm
    self.verdict_pending = False  # a test's end record is in buf

  def send(self, rec: dict, flush: bool = False) -> None:
    now = _monotonic()
    rec["tm"] = now
    self.buf.append(self.nonce + "\t" + _dumps(rec) + "\n")
    self.verdict_pending = self.verdict_pending or rec["e"] == "end"
    if flush or now - self.last > _FLUSH_EVERY_S:
      self.flush()

  def flush(self) -> None:
    data = "".join(self.buf).encode("ascii")
    self.buf = []
    self.verdict_pending = False
    self.last = _monotonic()
    view = memoryview(data)
    while view:
      n = _write(self.fd, view)
      view = view[n:]


def _snapshot_modules(names) -> list:
  """(module, attrs, {class: attrs}) for stdlib modules the test code may read."""
  snaps = []
  for name in names:
    mod = sys.modules.get(name)
    if mod is None or type(mod) is not _ModuleType:
      continue
    attrs = dict(vars(mod))
    classes = {}
    for v in attrs.values():
      if type(v) is type and getattr(v, "__module__", "").split(".")[0] == name.split(".")[0]:
        try:
          classes[v] = dict(vars(v))
        except TypeError:
          pass
    snaps.append((mod, attrs, classes))
  return snaps


_PRISTINE: dict[str, tuple] = {}


def snapshot_pristine() -> None:
  """Snapshot the guarded modules once, in the worker, before any program ran (children inherit
  it, so a child only pays for restoring the modules its test code names)."""
  for snap in _snapshot_modules([m for m in _GUARDED_MODULES if m in sys.modules]):
    _PRISTINE[snap[0].__name__] = snap


def _referenced_modules(ttree: ast.AST) -> tuple[set[str], set[str]]:
  """(modules the test code imports, names it loads) -- what a monkeypatch could reach."""
  imports, names = set(), set()
  for node in ast.walk(ttree):
    if isinstance(node, ast.Import):
      imports.update(a.name for a in node.names)
      names.update(a.name.split(".")[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      imports.add(node.module)
    elif isinstance(node, ast.Name):
      names.add(node.id)
  return imports, names


def _restore_modules(snaps) -> list[str]:
  """Undo monkeypatching of snapshotted modules/classes; returns what had been changed."""
  changed = []
  for mod, attrs, classes in snaps:
    d = vars(mod)
    missing = object()
    if len(d) != len(attrs) or any(d.get(k, missing) is not v for k, v in attrs.items()):
      changed.append(mod.__name__)
      d.clear()
      d.update(attrs)
    for cls, cattrs in classes.items():
      now = dict(vars(cls))
      for k in now:
        if type(k) is str and k not in cattrs:
          try:
            type.__delattr__(cls, k)
          except (AttributeError, TypeError):
            pass
          changed.append(f"{mod.__name__}.{cls.__name__}")
      for k, v in cattrs.items():
        if now.get(k) is not v and k not in ("__dict__", "__weakref__"):
          try:
            type.__setattr__(cls, k, v)
          except (AttributeError, TypeError):
            pass
          changed.append(f"{mod.__name__}.{cls.__name__}")
  return changed


def _safe_str(exc) -> str:
  return _BaseException_str(exc)


def _error_text(exc: BaseException, run_untrusted, limit: int) -> tuple[str, str]:
  """('TypeName: message (program line N)', innermost filename).

  Called while trusted; the message (which may run the program's ``__str__`` of an argument) is
  computed with the audit hook armed, the traceback is read with plain attribute access.
  """
  name = type.__dict__["__name__"].__get__(type(exc))
  msg, bad = run_untrusted(_safe_str, exc)
  if bad is not None or type(msg) is not str:
    msg = "?"
  where, line, tb = "", None, _get_traceback(exc)
  while tb is not None:
    fname = tb.tb_frame.f_code.co_filename
    where = fname
    if fname == PROGRAM_FILE:
      line = tb.tb_lineno
    tb = tb.tb_next
  text = f"{name}: {msg}" if msg else name
  if line is not None:
    text += f" (program line {line})"
  return text[:limit], where


def _apps_wrap(tree: ast.Module) -> ast.Module:
  """APPS runs scripts with a top-level return/nonlocal inside a function; so do we.

  Imports stay at module level; line numbers are kept, so coverage is unchanged.
  """
  imports = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]
  rest = [s for s in tree.body if not isinstance(s, (ast.Import, ast.ImportFrom))]
  if not rest:
    rest = [ast.Pass()]
  first = rest[0]
  fn = ast.FunctionDef(
    name="__apps_main__",
    args=ast.arguments(
      posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[], kwarg=None, defaults=[]
    ),
    body=rest,
    decorator_list=[],
    returns=None,
    type_comment=None,
  )
  call = ast.Expr(ast.Call(ast.Name("__apps_main__", ast.Load()), [], []))
  for node in (fn, call):
    ast.copy_location(node, first)
  mod = ast.Module(body=imports + [fn, call], type_ignores=[])
  return ast.fix_missing_locations(mod)


def _compile(program: str, kind: str, coverage: bool):
  """(code, statement units, error, warnings). Compile errors are SyntaxErrors and friends;
  nothing ran.

  With coverage the code carries probes (``lines.instrument``) and units are their spans. The
  parser's and compiler's warnings (SyntaxWarning, invalid escapes) belong to the program's
  result: printed, they would land in the trainer's terminal (the worker shares its stderr).
  """
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    code, units, err = _compile_program(program, kind, coverage)
  return code, units, err, _warning_texts(caught)


def _warning_texts(caught) -> list[str]:
  """'Category: message (program line N)' per distinct warning, at most MAX_WARNINGS."""
  texts: list[str] = []
  for w in caught:
    text = f"{w.category.__name__}: {w.message}"
    if w.filename == PROGRAM_FILE:
      text += f" (program line {w.lineno})"
    if text not in texts and len(texts) < MAX_WARNINGS:
      texts.append(text)
  return texts


def _compile_program(program: str, kind: str, coverage: bool):
  """(code, units, error) of ``_compile``."""
  try:
    tree = ast.parse(program, PROGRAM_FILE)
  except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError) as e:
    return None, None, f"{type(e).__name__}: {e}"
  units = []
  if coverage:
    tree, units = _instrument(tree)
  try:
    return compile(tree, PROGRAM_FILE, "exec"), units, None
  except SyntaxError as e:
    msg = str(e)
    if kind == "stdio" and ("outside function" in msg or "nonlocal" in msg):
      try:
        return compile(_apps_wrap(tree), PROGRAM_FILE, "exec"), units, None
      except SyntaxError:
        pass
    return None, None, f"SyntaxError: {e}"
  except (ValueError, MemoryError, RecursionError, OverflowError) as e:
    return None, None, f"{type(e).__name__}: {e}"


_THREADS: list = []  # [threading.enumerate, threading.main_thread] once bound (trusted)


def _bind_threading() -> None:
  """Bind threading's functions (trusted, before the program runs) if the child has threading.

  It is not preloaded by default: its at-fork hook would run, and fault pages, in every child.
  The child imports it on demand (``read_job``) when the program names it.
  """
  threading = sys.modules.get("threading")
  if threading is not None:
    _THREADS[:] = [threading.enumerate, threading.main_thread]


def _join_threads(deadline_s: float = 3600.0) -> None:
  """Wait for non-daemon threads the program started (APPS solutions often run main in one)."""
  if not _THREADS:
    return
  enumerate_threads, main_thread = _THREADS
  main = main_thread()
  for t in enumerate_threads():
    if t is not main and not t.daemon:
      t.join(deadline_s)


@functools.lru_cache(maxsize=1024)
def _test_plan(test_code: str, test_setup_code: str, entry_point: str):
  """Assert-style test code, prepared once per problem in the worker.

  Returns (imports, guarded modules, (is_check, setup code or None, codes), error): ``codes`` is
  ``(check module,)`` for HumanEval's ``check(candidate)``, else one ``(code, is_assert)`` per
  top-level statement (MBPP).
  """
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the dataset's, not the program's: not the user's concern
    try:
      ttree = ast.parse(test_code, TESTS_FILE)
    except (SyntaxError, ValueError) as e:
      return (), (), None, f"test code does not parse: {e}"
    imports, names = _referenced_modules(ttree)
    guarded = sorted((imports | names) & (set(_GUARDED_MODULES) | imports))
    try:
      setup = compile(test_setup_code, TESTS_FILE, "exec") if test_setup_code.strip() else None
      is_check = bool(entry_point) and any(
        isinstance(s, ast.FunctionDef) and s.name == "check" for s in ttree.body
      )
      if is_check:
        codes = (compile(ttree, TESTS_FILE, "exec"),)
      else:
        codes = tuple(
          (
            compile(ast.Module(body=[st], type_ignores=[]), TESTS_FILE, "exec"),
            isinstance(st, ast.Assert),
          )
          for st in ttree.body
        )
    except (SyntaxError, ValueError) as e:
      return (), (), None, f"test code does not compile: {e}"
    return tuple(sorted(imports)), tuple(guarded), (is_check, setup, codes), None


def prepare(
  job: dict, coverage: bool, on_demand=()
) -> tuple[bytes | None, list, str | None, str | None, list[str]]:
  """In the worker: compile the program (with probes) and its tests for the child.

  Returns (marshalled code, statement units, compile error, setup error, compile warnings) and
  adds to ``job`` what the child needs besides the code. The program's text is parsed here, in
  the trusted worker; Python's parser and compiler refuse deep nesting with exceptions, which
  become compile errors.
  ``on_demand``: modules the child imports, before it is confined, when the program's text names
  them (a superset of what it imports; a mention in a comment costs only the import).
  """
  if len(job["program"]) > MAX_PROGRAM_CHARS:  # parsing it would cost the worker seconds
    return (
      None,
      [],
      f"program too long ({len(job['program'])} > {MAX_PROGRAM_CHARS} chars)",
      None,
      [],
    )
  code, units, err, warned = _compile(job["program"], job["kind"], coverage)
  if err is not None:
    return None, [], err, None, warned
  tests = None
  if job["kind"] == "assert":
    imports, guarded, tests, err = _test_plan(
      job["test_code"], job.get("test_setup_code") or "", job.get("entry_point") or ""
    )
    if err is not None:
      return None, units, None, err, warned
    job["test_imports"], job["guarded"] = list(imports), list(guarded)
  job["imports"] = [m for m in on_demand if m in job["program"]]
  job["n_units"] = len(units)
  return marshal.dumps((code, tests)), units, None, None, warned


def job_frame(job: dict, blob: bytes) -> bytes:
  """What the child reads: 4-byte length, the job's JSON (no program text), the code."""
  head = json.dumps(
    {k: v for k, v in job.items() if k not in ("program", "test_code", "test_setup_code")}
  ).encode()
  return len(head).to_bytes(4, "big") + head + blob


class Harness:
  """Runs the tests of one job; see the module docstring."""

  def __init__(self, job: dict, report: _Reporter, set_trusted):
    self.job = job
    self.report = report
    self.set_trusted = set_trusted
    self.limit = int(job.get("max_error_chars", 500))
    # The program's probes set hits[k] = 1 when statement unit k runs. A list, not a bytearray:
    # 3.11 specializes a store into a list (HumanEval/75's triple loop: 1.27x instead of 1.68x).
    self.hits: list = []
    self.n_units = 0
    self.sent = 0
    self.max_out = int(job["max_output_bytes"])
    # The time limits, on the monotonic clock the worker also reads (see _untrusted).
    self.timeout_s = float(job["timeout_s"])
    self.deadline = float(job["deadline_tm"])
    self.alarm_at = self.deadline
    self.current: int | None = None  # the test running, for the timeout record

  # -- helpers ---------------------------------------------------------------------------------
  def _new_lines(self) -> list[int]:
    """Ids of the units hit so far. The program can write anything into the list: only exact
    ints count (their truth test runs no program code), and the list is read up to n_units."""
    hits = self.hits[: self.n_units]
    return [k for k, h in enumerate(hits) if type(h) is _int and h]

  def _trace_namespace(self, ns: dict) -> None:
    """Give the program's namespace the probe array (one array for all tests: merged)."""
    ns[_PROBE] = self.hits

  def _untrusted(self, fn, *args):
    """Call fn(*args) with the audit hook armed and the time limit live; returns (value, exc).

    The handler is swapped inside the ``try``: an alarm up to the swap back is caught here.
    """
    if self.report.verdict_pending:  # a kill in what follows must not lose a verdict
      self.report.flush()
    if _monotonic() >= self.alarm_at:
      self._report_timeout()  # the limit passed during our own bookkeeping
    try:
      _set_handler(_SIGALRM, _interrupt)
      self.set_trusted(False)
      value, exc = fn(*args), None
      _set_handler(_SIGALRM, _SIG_IGN)
    except BaseException as e:  # pylint: disable=broad-except
      _set_handler(_SIGALRM, _SIG_IGN)
      value, exc = None, e
    finally:
      self.set_trusted(True)
    if type(exc) is KeyboardInterrupt and _monotonic() >= self.alarm_at - 1e-3:
      self._report_timeout()  # (before the limit it is the program's own: an exception)
    return value, exc

  # -- time limits -----------------------------------------------------------------------------
  def _arm(self, at: float) -> None:
    """Deliver SIGALRM at ``at`` (monotonic) or at the program's deadline, if sooner."""
    self.alarm_at = min(at, self.deadline)
    _setitimer(_ITIMER_REAL, max(self.alarm_at - _monotonic(), 1e-4))

  def _report_timeout(self) -> None:
    """The time limit: send the test running and the coverage reached so far, and exit."""
    self.report.send({"e": "timeout", "i": self.current, "lines": self._new_lines()}, flush=True)
    _exit(0)

  def _start(self, i: int) -> None:
    """Test i begins: its time limit starts (its start reaches the worker before its code runs
    if an earlier verdict waits, see _untrusted, else within 50 ms)."""
    rec = {"e": "start", "i": i}
    self.report.send(rec)
    self.current = i
    self._arm(rec["tm"] + self.timeout_s)

  def _end(self, i, status, out=None, error="", t0=0.0):
    rec = {"e": "end", "i": i, "status": status, "lines": self._new_lines(), "t": _perf() - t0}
    if out is not None:
      rec["out"] = out
    if error:
      rec["error"] = error[: self.limit]
    # In stop-at-first-failure mode the judge must see each verdict at once to stop the rest.
    self.report.send(rec, flush=bool(self.job.get("stop_at_first_failure")))
    self.current = None

  def _fail_setup(self, exc):
    text, _ = _error_text(exc, self._untrusted, self.limit)
    self.set_trusted(True)
    self.report.send({"e": "setup_error", "error": text, "lines": self._new_lines()})

  # -- entry -----------------------------------------------------------------------------------
  def run(self, blob: bytes) -> None:
    job = self.job
    kind = job["kind"]
    code, tests = _mloads(blob)
    self.n_units = int(job["n_units"])
    self.hits = [0] * self.n_units
    _bind_threading()
    _set_handler(_SIGALRM, _SIG_IGN)  # see _untrusted
    self._arm(float(job["sent_tm"]) + self.timeout_s)  # set-up counts as part of test 0
    if kind == "stdio":
      self._run_stdio(code)
    elif kind == "call":
      self._run_call(code)
    else:
      self._run_assert(code, tests)

  # -- stdio -----------------------------------------------------------------------------------
  def _prepare_stdio_files(self, inputs):
    fds = []
    for i, text in enumerate(inputs):
      fd = _open(f"_in{i}", _O_RW_NEW, 0o600)
      data = text.encode("utf-8", "surrogatepass")
      view = memoryview(data)
      while view:
        view = view[_write(fd, view) :]
      fds.append(fd)
    return fds

  def _capture(self, i):
    fd = _open(f"_out{i}", _O_RW_NEW, 0o600)
    _dup2(fd, 1)
    out = _TextIOWrapper(
      _BufferedWriter(_FileIO(1, "w", closefd=False)),
      encoding="utf-8",
      errors="replace",
      line_buffering=False,
      write_through=False,
    )
    sys.stdout = out
    return fd, out

  def _collect(self, fd, out) -> str:
    for stream in (out, _ORIG_STDOUT):
      try:
        if type(stream) is _TextIOWrapper:
          _flush(stream)
      except BaseException:  # pylint: disable=broad-except
        pass
    _lseek(fd, 0, 0)
    chunks, total = [], 0
    while total < self.max_out:
      b = _read(fd, min(1 << 16, self.max_out - total))
      if not b:
        break
      chunks.append(b)
      total += len(b)
    _close(fd)
    return b"".join(chunks).decode("utf-8", "replace")

  def _run_stdio(self, code):
    inputs = self.job["inputs"]
    in_fds = self._prepare_stdio_files(inputs)
    self.job["limit_files"]()
    for i, in_fd in enumerate(in_fds):
      _lseek(in_fd, 0, 0)
      _dup2(in_fd, 0)
      _close(in_fd)
      sys.stdin = _TextIOWrapper(
        _BufferedReader(_FileIO(0, "r", closefd=False)), encoding="utf-8", errors="replace"
      )
      out_fd, out = self._capture(i)
      self._start(i)
      t0 = _perf()
      ns = {"__name__": "__main__", "__builtins__": builtins}
      exec(_APPS_HEADER_CODE, ns)  # pylint: disable=exec-used
      self._trace_namespace(ns)
      _, exc = self._untrusted(self._exec_and_join, code, ns)
      if exc is not None and type(exc) is SystemExit:
        status = exc.code
        if status is None or (type(status) is int and status == 0):
          exc = None
      text = self._collect(out_fd, out)
      if exc is not None:
        self._end(
          i, "error", out=text, error=_error_text(exc, self._untrusted, self.limit)[0], t0=t0
        )
      else:
        self._end(i, "ok", out=text, t0=t0)

  @staticmethod
  def _exec_and_join(code, ns):
    try:
      exec(code, ns)  # pylint: disable=exec-used
    finally:
      _join_threads()

  # -- call-based ------------------------------------------------------------------------------
  def _run_call(self, code):
    self.job["limit_files"]()
    ns = {"__name__": "__sandbox__", "__builtins__": builtins}
    exec(_APPS_HEADER_CODE, ns)  # pylint: disable=exec-used
    self._trace_namespace(ns)
    _, exc = self._untrusted(exec, code, ns)
    if exc is not None:
      self._fail_setup(exc)
      return
    fn_name = self.job["fn_name"]
    args_all = self.job["inputs"]
    for i, args in enumerate(args_all):
      self._start(i)
      t0 = _perf()
      args = _plain(args)  # a fresh copy per test: programs may mutate their arguments
      out, exc = self._untrusted(self._call, ns, fn_name, args)
      if exc is not None:
        status, text = self._classify(exc)
        self._end(i, status, error=text, t0=t0)
      elif type(out) is not str:
        self._end(i, "error", error="internal: result was not encoded", t0=t0)
      else:
        self._end(i, "ok", out=out, t0=t0)

  @staticmethod
  def _call(ns, fn_name, args):
    sol = ns.get("Solution")
    if isinstance(sol, type) and hasattr(sol, fn_name):
      fn = getattr(sol(), fn_name)
    else:
      fn = ns[fn_name]
    if not isinstance(args, list):
      args = [args]
    return _encode(fn(*args))

  # -- assert (HumanEval / MBPP) -----------------------------------------------------------------
  def _test_namespace(self, ns: dict) -> dict:
    """Names the test code sees: plain copies and result-copying wrappers of program names.

    Classes other than the entry point pass through (MBPP tests build inputs from them, e.g.
    ``Node``/``Pair``), but calling one from test code yields an exact instance of it or a
    plain copy; the entry point is always result-copied, even when it is a class.
    """
    # Not a copy: the program cannot reach it, and the child ends with this one test run (a copy
    # would touch, and copy-on-write, the page of every builtin).
    tns = {"__name__": "__tests__", "__builtins__": _PRISTINE_BUILTINS}
    entry = self.job.get("entry_point")
    for k, v in list(dict.items(ns)):
      if type(k) is not str or k.startswith("__"):
        continue
      if type(v) is _ModuleType:
        tns[k] = v
      elif type(v) is type and k != entry:
        tns[k] = _wrap_class(v)
      elif callable(v):
        tns[k] = _wrap(v)
      else:
        copy, exc = self._untrusted(_plain, v)
        if exc is None:
          tns[k] = copy
    return tns

  def _run_assert(self, code, tests):
    job = self.job
    for name in job["test_imports"]:  # imported now, so that they are snapshotted
      if name not in sys.modules:
        try:
          __import__(name)
        except BaseException:  # pylint: disable=broad-except
          pass
    guarded = job["guarded"]
    snaps = [_PRISTINE[m] for m in guarded if m in _PRISTINE]
    snaps += _snapshot_modules([m for m in guarded if m not in _PRISTINE])
    self.job["limit_files"]()
    ns = {"__name__": "__sandbox__", "__builtins__": builtins}
    self._trace_namespace(ns)
    _, exc = self._untrusted(exec, code, ns)
    if exc is not None:
      self._fail_setup(exc)
      return
    patched = _restore_modules(snaps)
    tns = self._test_namespace(ns)
    is_check, setup, codes = tests
    if setup is not None:
      _, exc = self._untrusted(exec, setup, tns)
      if exc is not None:
        self._fail_setup(exc)
        return
    if is_check:
      self._run_check(codes[0], ns, tns, patched)
    else:
      self._run_assert_lines(codes, tns, patched)

  def _classify(self, exc) -> tuple[str, str]:
    text, where = _error_text(exc, self._untrusted, self.limit)
    if issubclass(type(exc), _NotData):
      return "fail", "returned a non-data value: " + text
    if issubclass(type(exc), AssertionError) and where == TESTS_FILE:
      return "fail", text
    return "error", text

  def _run_check(self, check_module, ns, tns, patched):
    entry = self.job["entry_point"]
    _, exc = self._untrusted(exec, check_module, tns)
    if exc is not None:
      self._fail_setup(exc)
      return
    self._start(0)
    t0 = _perf()
    if entry not in ns:
      self._end(0, "error", error=f"NameError: name {entry!r} is not defined", t0=t0)
      return
    check = tns.get("check")
    _, exc = self._untrusted(check, _wrap(ns[entry]))
    if exc is None:
      self._end(0, "ok", t0=t0)
    else:
      status, text = self._classify(exc)
      self._end(0, status, error=text, t0=t0)

  def _run_assert_lines(self, codes, tns, patched):
    i = 0
    for code, is_assert in codes:
      if not is_assert:
        _, exc = self._untrusted(exec, code, tns)
        if exc is not None:
          self._fail_setup(exc)
          return
        continue
      self._start(i)
      t0 = _perf()
      _, exc = self._untrusted(exec, code, tns)
      if exc is None:
        self._end(i, "ok", t0=t0)
      else:
        status, text = self._classify(exc)
        self._end(i, status, error=text, t0=t0)
      i += 1


def _wrap(fn):
  """Program callable -> callable whose results are plain-data copies (see plain.plain)."""
  plain = _plain

  def candidate(*args, **kwargs):
    return plain(fn(*args, **kwargs))

  return candidate


def _wrap_class(cls):
  """A program class called from test code: its own exact instance, else a plain copy."""
  plain = _plain

  def construct(*args, **kwargs):
    obj = cls(*args, **kwargs)
    if type(obj) is cls:
      return obj
    return plain(obj)

  return construct


def read_job(job_fd: int) -> tuple[dict, bytes]:
  """In the child, before it is confined: the job (see ``job_frame``), with the modules it asked
  for imported (a sandbox uid may not be able to read the interpreter's files)."""
  chunks = []
  while True:
    b = _read(job_fd, 1 << 20)
    if not b:
      break
    chunks.append(b)
  _close(job_fd)
  frame = b"".join(chunks)
  n = _unpack_len(frame[:4], "big")
  job = _loads(frame[4 : 4 + n])
  for name in job.get("imports", ()):
    try:
      __import__(name)
    except ImportError:
      pass
  return job, frame[4 + n :]


def child_main(
  job: dict, blob: bytes, report_fd: int, nonce: str, set_trusted, limit_files
) -> None:
  """Entry of a sandboxed child once confined: run the job, report, exit."""
  report = _Reporter(report_fd, nonce, float(job["sent_tm"]))
  try:
    job["limit_files"] = limit_files
    Harness(job, report, set_trusted).run(blob)
    report.send({"e": "done"}, flush=True)
  except BaseException as e:  # pylint: disable=broad-except
    try:
      set_trusted(True)
      report.send({"e": "internal", "error": f"{type(e).__name__}: {e}"[:500]}, flush=True)
    except BaseException:  # pylint: disable=broad-except
      pass
  _exit(0)
