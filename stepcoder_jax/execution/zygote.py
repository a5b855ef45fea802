"""The fork server of one worker: forks each sandboxed child, reaps it, reports its exit status.

Why a separate process: after ``fork`` every page that parent and child share is copy-on-write,
so whichever of them writes a page first takes a fault (and copies 4 KB while the other lives).
A worker parses jobs, compiles programs and compares outputs while its child runs; as the fork
parent it took ~340 such faults per program. The zygote is forked from the worker once, before
the first job, and between forks runs only the loop below, so it writes almost no pages; the
worker never forks again and writes its own memory freely. The zygote never sees a job either, so
no child can hold another program's data or the expected outputs in its memory.

Protocol, on a SOCK_SEQPACKET socket pair (one message per datagram):
  zygote -> worker  b"R" status           once, after its one-time set-up (``prepare``)
  worker -> zygote  b"F" sandbox_dir b"\\0" nonce, with SCM_RIGHTS [job_r, rep_w]
  zygote -> worker  b"P<pid>"             the child is forked
                    b"X<pid> <status>"    a child exited (its waitpid status)
  EOF on the socket: the zygote kills its children and exits.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket

from stepcoder_jax.execution import sandbox

_MAX_MSG = 4096


class ZygoteDied(RuntimeError):
  pass


def _keep_only(keep: int) -> None:
  """Close every fd above 2 but ``keep`` (the worker's pool pipes must not outlive the worker)."""
  os.closerange(3, keep)
  os.closerange(keep + 1, 1 << 16)


def _noop(*_):
  pass


def _serve(sock: socket.socket, spawn_child) -> None:
  """The zygote's loop (see module docstring); ``spawn_child`` runs in each child, never returns."""
  sandbox.become_subreaper()  # orphans of programs come back to us and are reaped here
  wake_r, wake_w = os.pipe()
  os.set_blocking(wake_r, False)
  os.set_blocking(wake_w, False)
  signal.set_wakeup_fd(wake_w)
  signal.signal(signal.SIGCHLD, _noop)  # wakes poll() through wake_r when a child exits
  live: set[int] = set()
  poller = select.poll()
  poller.register(sock.fileno(), select.POLLIN)
  poller.register(wake_r, select.POLLIN)
  gc.collect()
  gc.freeze()  # children's gc then skips everything inherited (fewer copy-on-write faults)
  while True:
    for fd, _ in poller.poll():
      if fd == wake_r:
        while True:
          try:
            if not os.read(wake_r, 512):
              break
          except BlockingIOError:
            break
        continue
      msg, fds, _, _ = socket.recv_fds(sock, _MAX_MSG, 2)
      if not msg:
        for pid in live:
          try:
            os.killpg(pid, signal.SIGKILL)
          except OSError:
            pass
        os._exit(0)
      sandbox_dir, nonce = msg[1:].decode().split("\0")
      pid = os.fork()
      if pid == 0:
        try:
          signal.set_wakeup_fd(-1)
          signal.signal(signal.SIGCHLD, signal.SIG_DFL)
          spawn_child(sandbox_dir, fds[0], fds[1], nonce)
        finally:
          os._exit(3)
      for f in fds:
        os.close(f)
      live.add(pid)
      sock.send(b"P%d" % pid)
    while True:  # reap: our children are reported, adopted orphans only reaped
      try:
        pid, status = os.waitpid(-1, os.WNOHANG)
      except ChildProcessError:
        break
      if pid == 0:
        break
      if pid in live:
        live.discard(pid)
        sock.send(b"X%d %d" % (pid, status))


class Zygote:
  """The worker's handle on its zygote.

  ``prepare`` (optional) runs once in the zygote before it serves, e.g. to switch it (and so
  every child) into a private root; it returns a status string, which the worker reads as
  ``self.prepared``. An OSError it raises becomes the status ``"failed: ..."``; anything else
  kills the zygote (a half-done confinement must not serve programs).
  """

  def __init__(self, spawn_child, prepare=None):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
      try:
        ours.close()
        _keep_only(theirs.fileno())
        sandbox.die_with_parent()
        try:
          status = prepare() if prepare is not None else ""
        except OSError as e:
          status = f"failed: {e}"
        theirs.send(b"R" + status.encode())
        _serve(theirs, spawn_child)
      finally:
        os._exit(1)
    theirs.close()
    self.pid, self.sock = pid, ours
    self.exited: dict[int, int] = {}  # pid -> status, for the children the worker asked about
    msg = ours.recv(_MAX_MSG)
    if msg[:1] != b"R":
      self.close()
      raise ZygoteDied("the zygote exited during its set-up")
    self.prepared = msg[1:].decode()

  def fileno(self) -> int:
    return self.sock.fileno()

  def _note(self, msg: bytes) -> int | None:
    if not msg:
      raise ZygoteDied("the zygote exited")
    if msg[:1] == b"X":
      pid, status = (int(x) for x in msg[1:].split())
      self.exited[pid] = status
      return None
    return int(msg[1:])

  def fork(self, sandbox_dir: str, nonce: str, job_r: int, rep_w: int) -> int:
    """A new child waiting for its job on job_r; returns its pid."""
    try:
      socket.send_fds(self.sock, [b"F" + f"{sandbox_dir}\0{nonce}".encode()], [job_r, rep_w])
      while True:
        pid = self._note(self.sock.recv(_MAX_MSG))
        if pid is not None:
          return pid
    except OSError as e:
      raise ZygoteDied(f"the zygote is gone: {e}") from None

  def drain(self) -> None:
    """Read the exit reports that are already there (never blocks)."""
    while True:
      try:
        msg = self.sock.recv(_MAX_MSG, socket.MSG_DONTWAIT)
      except BlockingIOError:
        return
      except OSError as e:
        raise ZygoteDied(f"the zygote is gone: {e}") from None
      self._note(msg)

  def wait_exit(self, pid: int, timeout_s: float = 10.0) -> int | None:
    """The exit status of ``pid`` (which was killed or exited), or None after timeout_s."""
    while True:
      self.drain()
      if pid in self.exited:
        return self.exited.pop(pid)
      if not select.select([self.sock], [], [], timeout_s)[0]:
        return None

  def close(self) -> None:
    try:
      self.sock.close()
    except OSError:
      pass
    try:
      os.waitpid(self.pid, 0)
    except ChildProcessError:
      pass
