"""Where everything the project caches lives, and how a cache entry is filled by one process.

Every cache path (converted GGUF weights, the assembled bundled GGUF, TFDS datasets, the caches
of libraries we drive) derives from `cache_root()`: ``$STEPCODER_JAX_CACHE``, else
``~/.cache/stepcoder_jax``. One variable moves all of it, which is what lets a test run, a CI job
or a pod host keep its caches out of the user's home directory.

`exclusive(lock_path)` serialises the fill of one entry across processes: several hosts of a pod
(or test workers) that all find an entry missing would otherwise build it at once and trip over
each other's rename. It is an ``fcntl.flock`` on a lock file next to the entry: the kernel drops
it when the holder dies, even by SIGKILL, so a crashed builder never blocks the next run. Lock
files are never deleted (deleting one lets two processes hold "the" lock on different inodes).
This module imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

ENV_VAR = "STEPCODER_JAX_CACHE"

# Libraries that write their own caches under ~ unless told otherwise: variable -> sub-directory
# of the cache root. Set only when the user has not set the variable.
LIBRARY_CACHE_VARS = {
  "MPLCONFIGDIR": "matplotlib",  # font list cache and config (~/.cache, ~/.config)
  "HF_HOME": "huggingface",  # transformers / tokenizers / hub files
  "TFDS_CACHE_DIR": "tensorflow_datasets",  # TFDS's community-dataset metadata
}


def cache_root() -> Path:
  """The directory every cache of the project lives under (not created here)."""
  root = os.environ.get(ENV_VAR, "")
  if root:
    return Path(root).expanduser()
  return Path.home() / ".cache" / "stepcoder_jax"


# The library cache variables as the user set them, before route_library_caches changes them
# (models/hub.py looks for Hub models in the user's own Hugging Face cache too).
USER_ENV = {var: os.environ.get(var) for var in ("HF_HOME", "HF_HUB_CACHE")}


def route_library_caches() -> None:
  """Point the caches of matplotlib, Hugging Face and TFDS under `cache_root()` (unless set).

  Called by the CLI before any of those libraries is imported, so a run writes only below the
  cache root and its work directory.
  """
  for var, sub in LIBRARY_CACHE_VARS.items():
    if not os.environ.get(var):
      os.environ[var] = str(cache_root() / sub)


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike, what: str = "") -> Iterator[None]:
  """Hold an exclusive lock on ``lock_path`` (created if missing) for the body.

  Args:
    lock_path: the lock file; put it next to the entry it guards, on the same file system.
    what: the entry's name for the log line printed when another process holds the lock.
  """
  lock_path = Path(lock_path)
  lock_path.parent.mkdir(parents=True, exist_ok=True)
  fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      log.info("waiting for another process to finish %s (lock %s)", what or lock_path, lock_path)
      fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)  # closing the last descriptor of the open file releases the lock
