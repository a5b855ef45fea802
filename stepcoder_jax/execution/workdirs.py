"""Programs' working directories: one per worker, named after the worker's pid, under the sandbox
root; the pool removes those whose worker is dead (its own, and those of earlier pools).

A worker's directory is ``<root>/scj-<worker pid>-<random>``; each program gets a subdirectory,
removed by the worker after the program. With a mount namespace the directory is a capped tmpfs
that only the worker, its zygote and its programs see (``mounts.cap_directory``): the host sees an
empty mount point, and the data dies with the worker's namespace even when the worker is killed.
Without one it is a plain directory, and a killed worker leaves its programs' files in it until
a pool that survives it calls ``remove_stale``.

No shutil or tempfile here: the worker imports this module (see worker.py's docstring).
"""

from __future__ import annotations

import os

PREFIX = "scj-"


def sandbox_root(configured: str | None) -> str:
  """The parent of the workers' directories: the configured one, else /dev/shm when writable,
  else the system temp dir."""
  if configured:
    return configured
  return "/dev/shm" if os.access("/dev/shm", os.W_OK) else os.environ.get("TMPDIR", "/tmp")


def create(root: str) -> str:
  """A fresh directory for the calling worker (0711: a sandbox uid may pass, not list)."""
  path = os.path.join(root, f"{PREFIX}{os.getpid()}-{os.urandom(8).hex()}")
  os.mkdir(path, 0o711)
  os.chmod(path, 0o711)  # whatever the umask
  return path


def owner_pid(name: str) -> int | None:
  """The worker pid recorded in a directory name, or None if the name is not ours."""
  if not name.startswith(PREFIX):
    return None
  parts = name[len(PREFIX) :].split("-")
  if len(parts) != 2 or not parts[0].isdigit() or len(parts[1]) != 16:
    return None
  return int(parts[0])


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # someone else's process
  return True


def remove_stale(root: str) -> list[str]:
  """Remove our worker directories under ``root`` whose worker process is gone; returns them.

  A live (or zombie) owner keeps its directory; a reused pid only delays the removal."""
  removed = []
  try:
    entries = list(os.scandir(root))
  except OSError:
    return removed
  me = os.geteuid()
  for e in entries:
    pid = owner_pid(e.name)
    if pid is None or _alive(pid):
      continue
    try:
      if not e.is_dir(follow_symlinks=False) or e.stat(follow_symlinks=False).st_uid != me:
        continue
    except OSError:
      continue
    rmtree(e.path)
    removed.append(e.path)
  return removed


def rmtree(path: str) -> None:
  """Remove a directory tree without following links."""
  try:
    os.chmod(path, 0o700)  # a program may have made its own subdirectories unreadable
    with os.scandir(path) as it:
      entries = list(it)
  except OSError:
    entries = []
  for e in entries:
    try:
      if e.is_dir(follow_symlinks=False):
        rmtree(e.path)
      else:
        os.unlink(e.path)
    except OSError:
      pass
  try:
    os.rmdir(path)
  except OSError:
    pass
