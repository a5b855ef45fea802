"""Stopping a training loop cleanly on SIGTERM or SIGINT: finish the step, save, exit 0.

A Spot or preemptible Cloud TPU / GCE VM gets SIGTERM about 30 s before it goes away, and a user
stops a run with Ctrl-C. While a loop (runs/trainer.py, runs/sft.py) runs inside a `StopOnSignal`,
the first SIGTERM or SIGINT only sets a flag. The loop asks `should_stop()` once per iteration, at
a fixed point after the iteration's work, saves its checkpoint there, and raises `Stopped`, whose
message is the one line the CLI prints before it exits with status 0 (cli.py). The previous
handlers come back when the loop ends, so SIGINT is a KeyboardInterrupt again outside it.

Agreement across processes. The hosts of a slice get the signal at different moments. A host that
saved iteration k while another went on to k + 1 would leave a checkpoint nobody can restore (each
host writes only its own shards), or a peer waiting forever in a collective. So `should_stop()` is
a collective: every process contributes its flag to one all-gather at the same point of the same
iteration, and all of them stop when any flag is set. A signal that reaches a process after it
contributed its flag counts at the next iteration, on every process alike, so all save the same
iteration whatever the moment each was signalled. JAX's preemption sync point
(`multihost_utils.reached_preemption_sync_point`) agrees on a step through the distributed runtime
instead, but it hears only SIGTERM, needs jax.distributed (not a one-process run) and its own C++
handler; one all-gather of a flag per iteration costs nothing next to an RL iteration.

Later signals. A second SIGINT outside a save raises KeyboardInterrupt at once (a user pressing
Ctrl-C again means it; the last finished checkpoint stays, since orbax makes a step visible only
when it is complete). A repeated SIGTERM is only logged: machines repeat it (systemd signals every
process of a session, a launcher passes its own signal on), and it must not cut the stop short.
During the save (`saving()`) every signal is only logged: the save finishes first.

A stopped run leaves `STOPPED.json` in its output directory (process 0), so a driver that runs
it as a subprocess (the ablation) can tell a stop from a finish, both exiting 0; the next run of
the loop removes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator

_log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
MARKER = "STOPPED.json"


class Stopped(Exception):
  """Raised by a loop once it saved after a signal; `str()` is the one line for the user."""


def _process_index() -> int:
  import jax

  return jax.process_index()


def _any_process(flag: bool) -> bool:
  """True on every process when `flag` is set on any (a collective with several processes)."""
  import jax

  if jax.process_count() == 1:
    return flag
  import numpy as np
  from jax.experimental import multihost_utils

  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))


def resume_command() -> str:
  """The command line that started this process: rerunning it resumes."""
  argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
  return shlex.join(argv)


class StopOnSignal:
  """Turns SIGTERM / SIGINT into a stop request while a loop runs (see the module docstring).

  Use `install()` ... `restore()` (or `with`). Handlers can only be set from the main thread;
  elsewhere (or with `enabled=False`, e.g. a run that has nowhere to save) the signals keep their
  handlers and `should_stop()` only takes part in the collective. A signal ignored when the loop
  starts stays ignored.
  """

  def __init__(self, enabled: bool = True):
    self.enabled = enabled
    self.received: str | None = None  # the first signal's name
    self._saving = False
    self._previous: dict[int, object] = {}

  def install(self) -> "StopOnSignal":
    if self.enabled and threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        # An ignored signal stays ignored (nohup; a shell's background job ignores SIGINT).
        if signal.getsignal(sig) != signal.SIG_IGN:
          self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def restore(self) -> None:
    for sig, old in self._previous.items():
      # None: a handler set outside Python, which cannot be put back from here; the default
      # action is the closest. (jax.distributed's SIGTERM notifier is one, but Python does not
      # see it: it reports the default, which is then what comes back.)
      signal.signal(sig, old if old is not None else signal.SIG_DFL)
    self._previous = {}

  def __enter__(self) -> "StopOnSignal":
    return self.install()

  def __exit__(self, *exc) -> None:
    self.restore()

  def _handle(self, signum: int, frame) -> None:
    name = signal.Signals(signum).name
    if self.received is None:
      self.received = name
      _log.warning(
        "%s received: finishing the current step, then saving and stopping "
        "(a second Ctrl-C stops at once, keeping the last checkpoint)",
        name,
      )
    elif self._saving:
      _log.warning("%s received during the save: finishing the save first", name)
    elif signum == signal.SIGINT:
      raise KeyboardInterrupt("second Ctrl-C before the save: stopping at once")
    else:
      _log.warning("%s received again: already stopping after this step", name)

  def should_stop(self) -> bool:
    """Whether to stop after this iteration: a collective, so call it on every process at the
    same point of every iteration."""
    return _any_process(self.received is not None)

  @contextlib.contextmanager
  def saving(self) -> Iterator[None]:
    """A save that further signals must not interrupt."""
    self._saving = True
    try:
      yield
    finally:
      self._saving = False

  def stopped(self, out_dir: str | Path, what: str, saved: str | Path) -> Stopped:
    """The exception to raise after the save: logs on every process, writes `STOPPED.json`
    (process 0) and carries the one line for the user."""
    reason = self.received or "a signal on another process"
    line = (
      f"stopped by {reason} after {what}: saved {saved}; to resume, run the same command: "
      f"{resume_command()}"
    )
    _log.info("process %d: stopped after %s, saved %s", _process_index(), what, saved)
    if _process_index() == 0:
      write_marker(
        out_dir, {"signal": reason, "after": what, "saved": str(saved), "resume": resume_command()}
      )
    return Stopped(line)


def write_marker(out_dir: str | Path, info: dict) -> None:
  path = Path(out_dir) / MARKER
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(info, indent=1) + "\n")
  os.replace(tmp, path)


def read_marker(out_dir: str | Path) -> dict | None:
  """The record a stopped run left in `out_dir`, or None."""
  try:
    return json.loads((Path(out_dir) / MARKER).read_text())
  except (OSError, ValueError):
    return None


def clear_marker(out_dir: str | Path) -> None:
  """Called when a loop starts (process 0): the run is going on again."""
  if _process_index() == 0:
    (Path(out_dir) / MARKER).unlink(missing_ok=True)
