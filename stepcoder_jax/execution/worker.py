"""A persistent worker process: judges one program at a time, each in a fresh forked child.

Run as ``python -m stepcoder_jax.execution.worker`` by the pool, which talks to it over stdin/
stdout with length-prefixed JSON frames: first the config, then jobs; each job gets one reply.

Why this shape: a worker pre-imports the harness and the stdlib modules programs use, then has a
child forked per program (a fork of a warm interpreter costs about a millisecond; a new
interpreter ~20). The forks come from the worker's zygote (``zygote.py``), a copy of the worker
made before the first job, so no child ever holds another job's data or any expected output; the
worker keeps those and computes the verdict from what the child reports. The worker parses,
instruments and compiles each program itself (``harness.prepare``) and hands the child code
objects. It enforces the per-test and per-program wall-time limits (SIGKILL to the child's process
group, a moment after the child's own timer: ``harness``) and removes each sandbox dir; the
zygote reaps.

The worker imports as little as it can (no shutil/tempfile: they load compression libraries;
no threading: its at-fork hook runs in every child): forking and exiting cost grows with every
page the zygote maps and every page a child writes.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import struct
import sys
import time

from stepcoder_jax.execution import compare, harness, mounts, sandbox, workdirs, zygote
from stepcoder_jax.execution import lines as lines_mod

_HDR = struct.Struct(">I")
_MAX_RECORD_BYTES = 8 << 20
# How long after a time limit the worker waits for the child's own timeout record (its coverage
# so far) before the SIGKILL: the child's timer fires at the limit (harness._untrusted).
_FLUSH_GRACE_S = 0.2


def read_frame(fd: int) -> bytes | None:
  """One length-prefixed frame, or None at EOF."""
  head = _read_exact(fd, 4)
  if head is None:
    return None
  (n,) = _HDR.unpack(head)
  return _read_exact(fd, n) if n else b""


def _read_exact(fd: int, n: int) -> bytes | None:
  chunks, got = [], 0
  while got < n:
    b = os.read(fd, min(n - got, 1 << 20))
    if not b:
      return None
    chunks.append(b)
    got += len(b)
  return b"".join(chunks)


def write_frame(fd: int, payload: bytes) -> None:
  _write_all(fd, _HDR.pack(len(payload)) + payload)


def _write_all(fd: int, data: bytes) -> None:
  view = memoryview(data)
  while view:
    view = view[os.write(fd, view) :]


class _Child:
  """A forked, confined process waiting for its job."""

  def __init__(self, pid, job_w, rep_r, nonce, sandbox_dir):
    self.pid, self.job_w, self.rep_r = pid, job_w, rep_r
    self.nonce, self.sandbox_dir = nonce, sandbox_dir


class Worker:
  """State of one worker process (see module docstring)."""

  def __init__(self, cfg: dict):
    self.cfg = cfg
    self.is_root = os.geteuid() == 0
    self.uid = None
    if self.is_root:
      base = int(cfg.get("sandbox_uid_base", 200000))
      self.uid = base + int.from_bytes(os.urandom(4), "little") % (1 << 20)
    want_net, want_mnt = cfg.get("network_namespace", True), cfg.get("mount_namespace", True)
    may_unshare = self.is_root or ((want_net or want_mnt) and sandbox.own_user_namespace())
    self.netns = "off" if not want_net else sandbox.enter_netns() if may_unshare else "no-netns"
    self.sandbox_root = workdirs.sandbox_root(cfg.get("sandbox_root"))
    self.workdir = workdirs.create(self.sandbox_root)
    self.files = "off"  # then "capped", "capped, private root" or why not
    if want_mnt:
      try:
        mounts.cap_directory(self.workdir, cfg["max_dir_mb"], cfg["max_dir_files"])
        self.files = "capped"
      except OSError as e:
        self.files = f"no mount namespace: {e}"
    self.program_env = sandbox.program_env(cfg, os.environ)
    self.subreaper = sandbox.become_subreaper()
    self.nproc = None
    if self.is_root or cfg.get("allow_fork"):
      # As root the uid is ours alone; otherwise RLIMIT_NPROC counts all of this user's
      # processes, so allow what runs now (and the zygote) plus the configured amount.
      self.nproc = cfg["max_processes"] + (0 if self.is_root else _count_user_processes() + 1)
    self.child: _Child | None = None
    for name in cfg.get("preload_modules", ()):
      try:
        importlib.import_module(name)
      except ImportError:
        pass
    exec(harness._APPS_HEADER_CODE, {})  # pylint: disable=exec-used,protected-access
    import socket  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import

    # (importable in programs, so that the sandbox, not a missing file, refuses the network)
    harness.snapshot_pristine()
    # Nothing of ours stays importable or reachable by module name in a child (names fixed now:
    # scanning sys.modules in each child would touch, and copy, a page per module name).
    self.drop_modules = tuple(
      name
      for name in sys.modules
      if name.startswith(("stepcoder_jax", "ctypes", "multiprocessing"))
      or name in ("__main__", "_ctypes", "_posixsubprocess", "subprocess")
    )
    self.zygote = zygote.Zygote(
      self._child_setup, self._private_root if self.files == "capped" else None
    )
    if self.files == "capped":
      self.files += ", " + self.zygote.prepared

  def _private_root(self) -> str:
    """Runs once in the zygote: its children see only the interpreter and the workdir."""
    mounts.private_root(self.workdir)
    return "private root"

  # -- children ----------------------------------------------------------------------------------
  def prefork(self) -> None:
    sandbox_dir = os.path.join(self.workdir, os.urandom(8).hex())
    os.mkdir(sandbox_dir, 0o700)
    if self.uid is not None:
      os.chown(sandbox_dir, self.uid, self.uid)
    job_r, job_w = os.pipe()
    rep_r, rep_w = os.pipe()
    nonce = os.urandom(12).hex()
    try:
      pid = self.zygote.fork(sandbox_dir, nonce, job_r, rep_w)
    except zygote.ZygoteDied:
      for fd in (job_w, rep_r):
        os.close(fd)
      workdirs.rmtree(sandbox_dir)
      raise
    finally:
      os.close(job_r)
      os.close(rep_w)
    os.set_blocking(rep_r, False)
    self.child = _Child(pid, job_w, rep_r, nonce, sandbox_dir)

  def _child_setup(self, sandbox_dir, job_r, rep_w, nonce):
    """Runs in the child (forked by the zygote): confine, then run the harness."""
    zygote_pid = os.getppid()
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
      signal.signal(sig, signal.SIG_DFL)
    os.chdir(sandbox_dir)
    os.environ.clear()  # (the worker's own environment is already the allowlisted one)
    os.environ.update(self.program_env, HOME=sandbox_dir, TMPDIR=sandbox_dir)
    # Private fds at random high numbers (above RLIMIT_NOFILE), everything else closed.
    jfd = 300 + int.from_bytes(os.urandom(2), "little") % 350
    rfd = 650 + int.from_bytes(os.urandom(2), "little") % 350
    os.dup2(job_r, jfd)
    os.dup2(rep_w, rfd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    out = os.open("_stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    err = os.open("_stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(err, 2)
    lo, hi = sorted((jfd, rfd))
    os.closerange(3, lo)
    os.closerange(lo + 1, hi)
    os.closerange(hi + 1, 1 << 16)
    if self.uid is not None:
      os.chown("_stdout", self.uid, self.uid)
      os.chown("_stderr", self.uid, self.uid)
    # The job is read (and the modules it names imported) before confinement: the worker wrote
    # it, and a sandbox uid may not be able to read the interpreter's files.
    job, blob = harness.read_job(jfd)
    for name in self.drop_modules:
      sys.modules.pop(name, None)
    cfg = dict(self.cfg, nproc=self.nproc)
    sandbox.set_limits(cfg)
    if self.uid is not None:
      sandbox.drop_privileges(self.uid)
    else:
      sandbox.drop_capabilities()  # those held in the worker's user namespace
    # After the uid change, which clears it: die with the zygote (a worker the pool kills must
    # not leave a sleeping program behind).
    sandbox.die_with_parent()
    if os.getppid() != zygote_pid:
      os._exit(3)
    max_out = int(cfg["max_output_bytes"])
    set_trusted = sandbox.install_audit_hook(sandbox_dir, bool(cfg.get("allow_fork")))
    harness.child_main(job, blob, rfd, nonce, set_trusted, lambda: sandbox.limit_file_size(max_out))

  def _kill(self, child: _Child) -> None:
    for fn, target in ((os.killpg, child.pid), (os.kill, child.pid)):
      try:
        fn(target, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        pass

  def _reap_uid(self) -> None:
    """Kill every process left under this worker's sandbox uid (forked descendants)."""
    if self.uid is None:
      return
    pid = os.fork()
    if pid == 0:
      try:
        os.setgid(self.uid)
        os.setuid(self.uid)
        os.kill(-1, signal.SIGKILL)
      finally:
        os._exit(0)
    os.waitpid(pid, 0)

  # -- one job -----------------------------------------------------------------------------------
  def judge(self, job: dict) -> dict:
    """Runs ``job`` in the pre-forked child; returns the ExecResult fields."""
    t0 = time.perf_counter()
    expected = job.pop("outputs", None)
    kind = job["kind"]
    n = int(job["n_tests"])
    cfg = self.cfg
    job["max_output_bytes"] = cfg["max_output_bytes"]
    job["max_error_chars"] = cfg["max_error_chars"]
    job.setdefault("coverage", cfg["coverage"])
    job["stop_at_first_failure"] = bool(cfg.get("stop_at_first_failure"))
    blob, units, compile_error, setup_error, warned = harness.prepare(
      job, bool(job["coverage"]), cfg.get("import_on_demand", ())
    )
    warned = [w[: cfg["max_error_chars"]] for w in warned]
    if blob is None:  # nothing to run: no child is used
      _, executable = _coverage(units, ())
      outcome, error = (
        ("compile_error", compile_error)
        if compile_error is not None
        else ("runtime_error", setup_error)
      )
      return {
        "outcome": outcome,
        "tests_passed": 0,
        "tests_total": n,
        "executed": [],
        "executable": sorted(executable),
        "coverage_state": "none",
        "warnings": warned,
        "error": error[: cfg["max_error_chars"]],
        "duration_s": time.perf_counter() - t0,
      }
    if self.child is None:
      self.prefork()
    child, self.child = self.child, None
    verdicts: list[str | None] = [None] * n
    errors: list[str] = []
    traced: set[int] = set()  # ids of the statement units that ran
    state = {
      "setup_error": None,
      "done": False,
      "current": None,
      "bad": None,
      "stop": False,
      "last_done": None,
      "timeout": False,
      "measured": False,
    }
    rel, abs_ = cfg["float_rel_tol"], cfg["float_abs_tol"]

    def cover(rec: dict) -> None:
      traced.update(int(x) for x in rec.get("lines", []))
      state["measured"] = True

    def on_record(rec: dict) -> None:
      e = rec.get("e")
      if state["timeout"]:
        return  # what ran past the time limit does not count
      if e == "setup_error":
        state["setup_error"] = str(rec.get("error", "error"))
        cover(rec)
      elif e == "timeout":  # the child's timer: the limit passed in the test it names
        i = rec.get("i")
        if (None if i is None else int(i)) != state["current"]:
          raise ValueError("timeout in a test that is not running")
        state["timeout"] = True
        cover(rec)
      elif e == "start":
        i = int(rec["i"])
        if not 0 <= i < n:
          raise ValueError("test index out of range")
        state["current"] = i
        state["start_tm"] = float(rec.get("tm", 0.0))
        state["last_tm"] = max(state["last_tm"], state["start_tm"])
      elif e == "end" and state["stop"]:
        return  # tests after the first failure do not count
      elif e == "end":
        i = int(rec["i"])
        if not 0 <= i < n or state["current"] != i:
          raise ValueError("unexpected test end")
        cover(rec)
        end_tm = float(rec.get("tm", 0.0))
        if end_tm > min(state["start_tm"] + cfg["timeout_s"], job["deadline_tm"]):
          state["timeout"] = True  # it ended past its limit (the program caught the interrupt)
          return
        state["current"] = None
        state["last_done"] = i
        state["last_tm"] = max(state["last_tm"], end_tm)
        status = rec.get("status")
        if status == "ok" and kind == "stdio":
          status = (
            "ok" if compare.stdio_equal(str(rec.get("out", "")), expected[i], rel, abs_) else "fail"
          )
        elif status == "ok" and kind == "call":
          try:
            got = compare.decode(str(rec.get("out", "null")))
            status = "ok" if compare.call_equal(got, expected[i], rel, abs_) else "fail"
          except (ValueError, RecursionError):
            status = "fail"
        if status not in ("ok", "fail", "error"):
          raise ValueError("bad status")
        verdicts[i] = {"ok": "pass", "fail": "fail", "error": "error"}[status]
        if status != "ok":
          if rec.get("error"):
            errors.append(f"test {i}: {rec['error']}")
          elif status == "fail" and not errors:
            errors.append(f"test {i}: wrong answer")
          if cfg.get("stop_at_first_failure"):
            state["stop"] = True
      elif e == "done":
        state["done"] = True
      elif e == "internal":
        state["bad"] = "harness error: " + str(rec.get("error", ""))
      else:
        raise ValueError("unknown record")

    deadline = t0 + cfg["program_timeout_s"]
    mono_to_perf = time.perf_counter() - time.monotonic()
    # The running test (or the setup before test 0) started at the latest start the child
    # reported, or when the job was sent; the child reports with at most 50 ms of delay. The
    # child's timer uses the same clock and limits.
    job.update(
      timeout_s=cfg["timeout_s"], deadline_tm=deadline - mono_to_perf, sent_tm=time.monotonic()
    )
    state["last_tm"] = job["sent_tm"]
    payload = harness.job_frame(job, blob)
    try:
      _write_all(child.job_w, payload)
    except OSError:
      state["bad"] = "sandbox process died before the job started"
    os.close(child.job_w)
    timed_out = False
    poller = select.poll()
    poller.register(child.rep_r, select.POLLIN)
    poller.register(self.zygote.fileno(), select.POLLIN)  # reports the child's exit
    prefix = child.nonce.encode() + b"\t"
    buf = [b""]

    def feed(data: bytes) -> None:
      b = buf[0] + data
      while b"\n" in b and not state["bad"]:
        line, b = b.split(b"\n", 1)
        if not line.startswith(prefix):
          state["bad"] = "the judge's result pipe received data not written by the harness"
          break
        try:
          on_record(json.loads(line[len(prefix) :]))
        except (ValueError, KeyError, TypeError, IndexError):
          state["bad"] = "malformed record on the judge's result pipe"
      if len(b) > _MAX_RECORD_BYTES:
        state["bad"] = "oversized record on the judge's result pipe"
      buf[0] = b

    def read_available() -> bool:
      """Reads what is there; False at EOF."""
      while True:
        try:
          data = os.read(child.rep_r, 1 << 20)
        except BlockingIOError:
          return True
        if not data:
          return False
        feed(data)
        if state["bad"]:
          return True

    def limit() -> float:
      return min(deadline, state["last_tm"] + mono_to_perf + cfg["timeout_s"])

    while True:
      now = time.perf_counter()
      dl = limit() + _FLUSH_GRACE_S  # the child's timeout record did not come: SIGKILL
      if now >= dl:
        timed_out = True
        break
      if state["stop"] or state["bad"] or state["done"] or state["timeout"]:
        break  # a finished child is killed, not awaited: its exit is slow and proves nothing
      events = poller.poll(max(1, int((dl - now) * 1000) + 1))
      fds = {fd for fd, _ in events}
      if child.rep_r in fds and not read_available():
        break  # EOF: the child (and anything it forked) is gone or closed the pipe
      if self.zygote.fileno() in fds:
        self.zygote.drain()
        if child.pid in self.zygote.exited:
          read_available()  # whatever it wrote before exiting; descendants may hold the pipe
          break
    if state["timeout"] or (
      not (state["done"] or state["stop"] or state["bad"]) and time.perf_counter() >= limit()
    ):
      timed_out = True  # its timer fired, or it ended past its time limit, whatever ended it
    current = state["current"]
    if timed_out and current is None:
      # Reports lag up to 50 ms: it was in the test after the last one it reported.
      nxt = 0 if state["last_done"] is None else state["last_done"] + 1
      current = nxt if nxt < n else None
    self._kill(child)
    # A finished child is not awaited (its exit is slow and proves nothing); the zygote reaps it.
    status = None if state["done"] else self.zygote.wait_exit(child.pid)
    self.zygote.exited.clear()
    if self.cfg.get("allow_fork"):
      self._reap_uid()
    os.close(child.rep_r)
    workdirs.rmtree(child.sandbox_dir)
    duration = time.perf_counter() - t0

    signum = os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else None
    outcome, error = _decide(state, verdicts, errors, timed_out, current, signum, cfg)
    passed = sum(v == "pass" for v in verdicts)
    executed, executable = _coverage(units, traced)
    measured = "measured" if job["coverage"] and state["measured"] else "none"
    return {
      "outcome": outcome,
      "tests_passed": passed,
      "tests_total": n,
      "test_verdicts": [v or "not_run" for v in verdicts],
      "executed": sorted(executed),
      "executable": sorted(executable),
      "coverage_state": measured,
      "warnings": warned,
      "error": error[: cfg["max_error_chars"]],
      "duration_s": duration,
    }

  def close(self) -> None:
    if self.child is not None:
      self._kill(self.child)
      workdirs.rmtree(self.child.sandbox_dir)
      self.child = None
    self.zygote.close()  # it kills whatever it still runs, then exits


def _decide(state, verdicts, errors, timed_out, current, signum, cfg) -> tuple[str, str]:
  """Outcome from the per-test verdicts (CodeRL priority: compile > runtime/timeout > fail)."""
  if state["bad"]:
    return "runtime_error", state["bad"]
  if timed_out:
    if current is not None:
      verdicts[current] = "timeout"
      errors.insert(0, f"test {current}: time limit ({cfg['timeout_s']} s) exceeded")
    else:
      return "timeout", f"program time limit ({cfg['program_timeout_s']} s) exceeded"
  if state["setup_error"]:
    return "runtime_error", state["setup_error"]
  if not state["done"] and not timed_out and not state["stop"]:
    if signum in (signal.SIGXCPU, signal.SIGKILL) and current is not None:
      verdicts[current] = "timeout"
      errors.insert(0, f"test {current}: CPU time limit exceeded")
    else:
      i = (
        current
        if current is not None
        else next((k for k, v in enumerate(verdicts) if v is None), None)
      )
      why = (
        f"killed by signal {signal.Signals(signum).name}"
        if signum
        else "exited before the tests finished"
      )
      if i is not None:
        verdicts[i] = "error"
      errors.insert(0, f"test {i}: program {why}" if i is not None else f"program {why}")
  for v in verdicts:
    if v in ("timeout", "error"):
      return ("timeout" if v == "timeout" else "runtime_error"), "; ".join(errors)
  if any(v == "fail" for v in verdicts):
    return "failed", "; ".join(errors)
  if all(v == "pass" for v in verdicts):
    return "passed", ""
  return "failed", "; ".join(errors) or "not all tests ran"


def _coverage(units, hit_ids) -> tuple[set[int], set[int]]:
  """(executed, executable) program lines from the statement units and the ids of those run."""
  hits = [False] * len(units)
  for k in hit_ids:
    if 0 <= k < len(units):
      hits[k] = True
  return lines_mod.covered(units, hits)


def _count_user_processes() -> int:
  uid, n = os.getuid(), 0
  for d in os.listdir("/proc"):
    if d.isdigit():
      try:
        if os.stat(f"/proc/{d}").st_uid == uid:
          n += 1
      except OSError:
        pass
  return n


def main() -> int:
  in_fd, out_fd = os.dup(0), os.dup(1)
  null = os.open(os.devnull, os.O_RDWR)
  os.dup2(null, 0)
  os.dup2(null, 1)
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pool shuts us down, not ^C
  first = read_frame(in_fd)
  if first is None:
    return 0
  worker = Worker(json.loads(first))
  worker.prefork()
  write_frame(
    out_fd,
    json.dumps(
      {
        "ready": True,
        "netns": worker.netns,
        "uid": worker.uid,
        "dir": worker.workdir,
        "files": worker.files,
        "pid": os.getpid(),
      }
    ).encode(),
  )
  try:
    return _serve(worker, in_fd, out_fd)
  except zygote.ZygoteDied:
    return 1  # the pool sees the pipe close, replaces this worker and retries its job
  finally:
    worker.close()


def _serve(worker: Worker, in_fd: int, out_fd: int) -> int:
  """Answer jobs until the pool closes our stdin."""
  while True:
    frame = read_frame(in_fd)
    if frame is None:
      return 0
    job = json.loads(frame)
    try:
      result = worker.judge(job)
    except zygote.ZygoteDied:
      raise
    except Exception as e:  # pylint: disable=broad-except  # report, stay alive
      result = {
        "outcome": "runtime_error",
        "tests_passed": 0,
        "tests_total": int(job.get("n_tests", 0)),
        "executed": [],
        "executable": [],
        "error": f"judge error: {type(e).__name__}: {e}",
        "duration_s": 0.0,
      }
      worker.child = None
    write_frame(out_fd, json.dumps(result).encode())
    if worker.child is None:
      worker.prefork()  # the next child, ready before the next job arrives


if __name__ == "__main__":
  sys.exit(main())
