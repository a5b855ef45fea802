"""ExecutionPool: persistent sandboxed workers judging programs in parallel (host side, no JAX).

    with ExecutionPool(ExecutionConfig(workers=8)) as pool:
      results = pool.run(jobs)            # list[ExecResult], input order
      future = pool.submit(more_jobs)     # overlap with device work; future.result() later

Each worker is a separate interpreter (``python -m stepcoder_jax.execution.worker``), never a
fork of the caller (a trainer holds accelerator state and threads that must not be forked). One
dispatcher thread per worker feeds it jobs from a shared queue. A worker that dies or stops
answering is replaced and its job retried once on the fresh worker; a second failure is reported
as a runtime error, so a batch always completes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from stepcoder_jax.execution import lines as lines_mod
from stepcoder_jax.execution import sandbox, workdirs
from stepcoder_jax.execution.config import ExecutionConfig, RewardConfig
from stepcoder_jax.execution.job import ExecResult, Job, count_tests, job_message
from stepcoder_jax.execution.reward import plugin_rewards
from stepcoder_jax.execution.reward import reward as reward_of
from stepcoder_jax.execution.worker import _HDR

_PKG_PARENT = str(Path(__file__).resolve().parents[2])
log = logging.getLogger(__name__)


class WorkerDied(RuntimeError):
  pass


def _cfg_dict(cfg: ExecutionConfig) -> dict:
  d = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
  d["preload_modules"] = list(d["preload_modules"])
  d["import_on_demand"] = list(d["import_on_demand"])
  d["env_allowlist"] = list(d["env_allowlist"])
  d["extra_env"] = dict(d["extra_env"] or {})
  # Resolved here, from the pool's environment (workers do not get TMPDIR), so that the pool
  # cleans where its workers write.
  d["sandbox_root"] = workdirs.sandbox_root(d["sandbox_root"])
  return d


# Passed to a worker (it may need them to start its interpreter) but never to its programs.
_WORKER_START_VARS = ("LD_LIBRARY_PATH",)


def _worker_env(cfg: dict) -> dict[str, str]:
  """A worker's environment: what its programs get, plus what starts the interpreter. Never the
  pool's whole environment: a worker's initial environment block is inherited, as memory, by
  every program forked from it."""
  env = sandbox.program_env(cfg, os.environ)
  env.update({k: os.environ[k] for k in _WORKER_START_VARS if k in os.environ})
  env["PYTHONPATH"] = _PKG_PARENT + (
    os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""
  )
  return env


class _WorkerProc:
  """One worker interpreter and its framed pipe protocol."""

  def __init__(self, cfg: dict, start_timeout_s: float = 120.0):
    env = _worker_env(cfg)
    self.proc = subprocess.Popen(
      [
        sys.executable,
        "-c",
        "import sys; from stepcoder_jax.execution.worker import main; sys.exit(main())",
      ],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      env=env,
      close_fds=True,
      start_new_session=True,
    )
    self.wfd, self.rfd = self.proc.stdin.fileno(), self.proc.stdout.fileno()
    self._send(json.dumps(cfg).encode())
    self.info = json.loads(self._recv(start_timeout_s))

  def _send(self, payload: bytes) -> None:
    data = memoryview(_HDR.pack(len(payload)) + payload)
    try:
      while data:
        data = data[os.write(self.wfd, data) :]
    except OSError as e:
      raise WorkerDied(f"worker pipe closed: {e}") from None

  def _read_exact(self, n: int, deadline: float) -> bytes:
    chunks, got = [], 0
    while got < n:
      left = deadline - time.monotonic()
      if left <= 0:
        raise TimeoutError("worker did not answer in time")
      r, _, _ = select.select([self.rfd], [], [], left)
      if not r:
        continue
      b = os.read(self.rfd, min(n - got, 1 << 20))
      if not b:
        raise WorkerDied("worker exited")
      chunks.append(b)
      got += len(b)
    return b"".join(chunks)

  def _recv(self, timeout_s: float) -> bytes:
    deadline = time.monotonic() + timeout_s
    (n,) = _HDR.unpack(self._read_exact(4, deadline))
    return self._read_exact(n, deadline)

  def send(self, msg: dict) -> None:
    self._send(json.dumps(msg).encode())

  def recv(self, timeout_s: float) -> dict:
    return json.loads(self._recv(timeout_s))

  @property
  def pid(self) -> int:
    return self.proc.pid

  def close(self, grace_s: float = 5.0) -> None:
    try:
      self.proc.stdin.close()
    except OSError:
      pass
    try:
      self.proc.wait(grace_s)
    except subprocess.TimeoutExpired:
      self.kill()
    try:
      self.proc.stdout.close()
    except OSError:
      pass

  def kill(self) -> None:
    try:
      os.killpg(self.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
      pass
    try:
      self.proc.kill()
    except ProcessLookupError:
      pass
    self.proc.wait()
    for f in (self.proc.stdin, self.proc.stdout):
      try:
        f.close()
      except OSError:
        pass


class _Batch:
  def __init__(self, jobs: list[Job], reward_fn=None):
    self.jobs = jobs
    self.reward_fn = reward_fn  # the gin reward.fn plug-in, applied once every job is judged
    self.results: list[ExecResult | None] = [None] * len(jobs)
    self.left = len(jobs)
    self.lock = threading.Lock()
    self.future: concurrent.futures.Future = concurrent.futures.Future()
    self.future.set_running_or_notify_cancel()
    if not jobs:
      self.future.set_result([])

  def put(self, i: int, res: ExecResult) -> None:
    with self.lock:
      self.results[i] = res
      self.left -= 1
      done = self.left == 0
    if done:
      if self.reward_fn is not None:
        try:  # a failing plug-in fails the batch: its error reaches the caller of result()
          plugin_rewards(self.reward_fn, self.jobs, self.results)
        except Exception as e:  # pylint: disable=broad-except
          self.future.set_exception(e)
          return
      self.future.set_result(list(self.results))


class ExecutionPool:
  """Sandboxed, persistent worker processes judging ``Job``s (see module docstring)."""

  def __init__(self, cfg: ExecutionConfig | None = None, reward_cfg: RewardConfig | None = None):
    self.cfg = cfg or ExecutionConfig()
    self.reward_cfg = reward_cfg or RewardConfig()
    self.num_workers = self.cfg.workers or os.cpu_count() or 1
    self._queue: queue.Queue = queue.Queue()
    self._threads: list[threading.Thread] = []
    self._workers: list[_WorkerProc | None] = []
    self._lock = threading.Lock()
    self._closed = True
    self.replaced = 0  # workers replaced after dying or hanging (for tests and logs)
    self._window = 2
    self._root = workdirs.sandbox_root(self.cfg.sandbox_root)

  # -- lifecycle -----------------------------------------------------------------------------------
  def __enter__(self) -> "ExecutionPool":
    self.start()
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def start(self) -> None:
    if not self._closed:
      return
    cfgd = _cfg_dict(self.cfg)
    workdirs.remove_stale(self._root)  # left by workers of earlier pools that were killed
    with concurrent.futures.ThreadPoolExecutor(self.num_workers) as ex:
      self._workers = list(ex.map(lambda _: _WorkerProc(cfgd), range(self.num_workers)))
    self._closed = False
    files = self._workers[0].info.get("files", "")
    if self.cfg.mount_namespace and files != "capped, private root":
      log.warning(
        "execution: no mount namespace for programs (%s): their directory is not "
        "capped and they can read the host's files",
        files,
      )
    for k in range(self.num_workers):
      t = threading.Thread(target=self._dispatch, args=(k,), daemon=True, name=f"exec-dispatch-{k}")
      t.start()
      self._threads.append(t)

  def close(self) -> None:
    if self._closed:
      return
    self._closed = True
    for _ in self._threads:
      self._queue.put(None)
    for t in self._threads:
      t.join()
    self._threads = []
    for w in self._workers:
      if w is not None:
        w.close()
    self._workers = []
    workdirs.remove_stale(self._root)  # our workers' directories: their owners have exited

  @property
  def worker_pids(self) -> list[int]:
    return [w.pid for w in self._workers if w is not None]

  @property
  def worker_info(self) -> list[dict]:
    return [w.info for w in self._workers if w is not None]

  # -- API ---------------------------------------------------------------------------------------
  def submit(self, jobs: list[Job]) -> concurrent.futures.Future:
    """Queue ``jobs``; the future's result is list[ExecResult] in input order."""
    if self._closed:
      raise RuntimeError("ExecutionPool is not started (use it as a context manager)")
    jobs = list(jobs)
    batch = _Batch(jobs, self.reward_cfg.fn)
    for i in range(len(jobs)):
      self._queue.put((batch, i))
    return batch.future

  def run(self, jobs: list[Job]) -> list[ExecResult]:
    return self.submit(jobs).result()

  # -- internals ---------------------------------------------------------------------------------
  def _respawn(self, k: int) -> None:
    old = self._workers[k]
    if old is not None:
      old.kill()
      workdirs.remove_stale(self._root)  # what its programs left, unless a namespace held it
    self._workers[k] = None
    self.replaced += 1
    self._workers[k] = _WorkerProc(_cfg_dict(self.cfg))

  def _dispatch(self, k: int) -> None:
    """Feeds worker k, keeping up to two jobs in its pipe so it never waits for us."""
    answer_timeout = self.cfg.program_timeout_s + 60.0
    inflight: collections.deque = collections.deque()  # [batch, i, msg, tries]
    stopping = False
    while True:
      while not stopping and len(inflight) < self._window:
        try:
          item = self._queue.get() if not inflight else self._queue.get_nowait()
        except queue.Empty:
          break
        if item is None:
          stopping = True
          break
        batch, i = item
        try:
          msg = job_message(batch.jobs[i])
        except Exception as e:  # pylint: disable=broad-except
          batch.put(
            i, self._result(batch.jobs[i], {"outcome": "runtime_error", "error": f"bad job: {e}"})
          )
          continue
        entry = [batch, i, msg, 0]
        inflight.append(entry)
        if not self._send(k, entry, inflight):
          continue
      if not inflight:
        if stopping:
          return
        continue
      batch, i, _, _ = inflight[0]
      try:
        raw = self._workers[k].recv(answer_timeout)
      except (WorkerDied, TimeoutError, OSError, ValueError) as e:
        self._recover(k, inflight, str(e))
        continue
      inflight.popleft()
      try:
        res = self._result(batch.jobs[i], raw)
      except Exception as e:  # pylint: disable=broad-except  # a batch always completes
        res = self._result(
          batch.jobs[i], {"outcome": "runtime_error", "error": f"judge error: {e}"}
        )
      batch.put(i, res)

  def _send(self, k: int, entry, inflight) -> bool:
    try:
      if self._workers[k] is None:
        self._respawn(k)
      self._workers[k].send(entry[2])
      return True
    except (WorkerDied, OSError, ValueError, TimeoutError) as e:
      self._recover(k, inflight, str(e))
      return False

  def _recover(self, k: int, inflight, why: str) -> None:
    """Worker k died or hung: replace it; its jobs are retried once, then reported failed."""
    try:
      self._respawn(k)
    except Exception:  # pylint: disable=broad-except
      self._workers[k] = None
    pending = list(inflight)
    inflight.clear()
    for entry in pending:
      batch, i, _, tries = entry
      if tries >= 1 or self._workers[k] is None:
        batch.put(
          i,
          self._result(
            batch.jobs[i],
            {"outcome": "runtime_error", "error": f"worker failed twice on this program: {why}"},
          ),
        )
        continue
      entry[3] = tries + 1
      inflight.append(entry)
      try:
        self._workers[k].send(entry[2])
      except (WorkerDied, OSError) as e:
        inflight.pop()
        batch.put(
          i,
          self._result(batch.jobs[i], {"outcome": "runtime_error", "error": f"worker failed: {e}"}),
        )

  def _result(self, job: Job, raw: dict) -> ExecResult:
    outcome = raw.get("outcome", "runtime_error")
    executed, pre_exec = lines_mod.split_lines(set(raw.get("executed", ())), job.prefix)
    executable, _ = lines_mod.split_lines(set(raw.get("executable", ())), job.prefix)
    return ExecResult(
      outcome=outcome,
      reward=reward_of(outcome, self.reward_cfg),
      tests_passed=int(raw.get("tests_passed", 0)),
      tests_total=int(raw.get("tests_total") or count_tests(job.problem)),
      executed_lines=executed,
      executable_lines=executable,
      prefix_executed_lines=pre_exec,
      error=str(raw.get("error", "")),
      duration_s=float(raw.get("duration_s", 0.0)),
      coverage_state=str(raw.get("coverage_state", "none")),
      warnings=[str(w) for w in raw.get("warnings", ())],
      test_verdicts=[str(v) for v in raw.get("test_verdicts", ())]
      or ["not_run"] * int(raw.get("tests_total") or count_tests(job.problem)),
    )
