"""Confinement of one program's process: limits, identity, and an audit hook (child side).

Layers, outermost first (each one is enough for some attacks, none for all):
  * the worker lives in an empty network namespace when the OS permits (``enter_netns``; without
    root, inside a user namespace of its own, ``own_user_namespace``), and in a mount namespace
    where programs' files are capped and only the interpreter is visible (``mounts.py``);
  * programs get a minimal environment (``program_env``), never the pool's;
  * as root, each worker runs its programs under its own random unprivileged uid, so a program
    cannot signal the pool, write root-owned files, or escape RLIMIT_NPROC (not enforced for root);
  * resource limits: CPU seconds, address space, processes/threads, file size (caps stdout and
    stderr, which go to files), open files; core dumps off;
  * a CPython audit hook (it cannot be removed once added) that refuses, while untrusted code runs:
    sockets, fork/exec/spawn/system, signals to other processes, ctypes, frame and gc
    introspection (which would reach the harness's objects), tracing/profiling hooks, writes and
    file-system changes outside the sandbox directory, and /proc, /sys and most of /dev.
The harness turns the hook on (``set_trusted(False)``) right before it runs untrusted code and off
while it does its own bookkeeping.
"""

from __future__ import annotations

import builtins
import os
import resource
import signal
import sys

__builtins__ = dict(vars(builtins))  # pylint: disable=redefined-builtin  # private copy

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_ALWAYS_DENIED = frozenset(
  {
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.system",
    "subprocess.Popen",
    "os.startfile",
    "pty.spawn",
    "os.forkpty",
    "sys._getframe",
    "sys._current_frames",
    "sys.settrace",
    "sys.setprofile",
    "gc.get_objects",
    "gc.get_referrers",
    "gc.get_referents",
    "os.setns",
    "os.unshare",
  }
)
_DENIED_PREFIXES = ("socket.", "ctypes.", "_ctypes.", "winreg.", "msvcrt.")
_DENIED_IMPORTS = frozenset(
  {"ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "cffi", "_cffi_backend"}
)
_FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
_PATH_EVENTS = {  # event -> indexes of path arguments that must stay inside the sandbox
  "os.remove": (0,),
  "os.rmdir": (0,),
  "os.mkdir": (0,),
  "os.rename": (0, 1),
  "os.link": (0, 1),
  "os.symlink": (1,),
  "os.chmod": (0,),
  "os.chown": (0,),
  "os.truncate": (0,),
  "os.utime": (0,),
  "os.chflags": (0,),
  "os.lchflags": (0,),
  "os.lchmod": (0,),
  "os.mkfifo": (0,),
  "os.mknod": (0,),
  "os.setxattr": (0,),
  "os.removexattr": (0,),
  "shutil.rmtree": (0,),
  "shutil.move": (0, 1),
  "shutil.copyfile": (1,),
  "shutil.copytree": (1,),
  "shutil.chown": (0,),
}
_DEV_OK = frozenset(
  {
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
    "/dev/stdin",
    "/dev/stdout",
    "/dev/stderr",
    "/dev/fd/0",
    "/dev/fd/1",
    "/dev/fd/2",
    "/proc/self/fd/0",
    "/proc/self/fd/1",
    "/proc/self/fd/2",
  }
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class SandboxViolation(PermissionError):
  """Raised inside the program when it tries something the sandbox refuses."""


_LIBC: list = []


def _libc():
  """libc through ctypes, loaded once per worker (children inherit it; ctypes itself is removed
  from their sys.modules)."""
  if not _LIBC:
    import ctypes  # pylint: disable=import-outside-toplevel

    _LIBC.append(ctypes.CDLL(None, use_errno=True))
  return _LIBC[0]


def libc_errno() -> int:
  """errno of the last failed libc call made through ``_libc()``."""
  import ctypes  # pylint: disable=import-outside-toplevel

  return ctypes.get_errno()


def own_user_namespace() -> bool:
  """Unprivileged: move the calling (worker) process into a user namespace of its own, keeping
  its ids (files stay ours), where it may create network and mount namespaces."""
  try:
    uid, gid = os.getuid(), os.getgid()
    if _libc().unshare(CLONE_NEWUSER) != 0:
      return False
    for path, text in (
      ("/proc/self/setgroups", "deny"),
      ("/proc/self/uid_map", f"{uid} {uid} 1"),
      ("/proc/self/gid_map", f"{gid} {gid} 1"),
    ):
      with open(path, "w") as f:
        f.write(text)
    return True
  except (OSError, AttributeError):
    return False


def enter_netns() -> str:
  """Move the calling (worker) process into an empty network namespace; returns what happened.
  Needs root, or ``own_user_namespace()`` first."""
  try:
    return "netns" if _libc().unshare(CLONE_NEWNET) == 0 else "no-netns"
  except (OSError, AttributeError):
    return "no-netns"


BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def program_env(cfg: dict, environ) -> dict[str, str]:
  """The environment a program gets (HOME and TMPDIR are added per program): the allowlisted
  variables of ``environ``, one BLAS/OpenMP thread (a thread pool per program would count against
  RLIMIT_NPROC and its buffers against RLIMIT_AS), then ``extra_env``. Nothing else: the pool's
  environment may hold tokens and credentials."""
  env = {k: environ[k] for k in cfg.get("env_allowlist", ()) if k in environ}
  env.update(dict.fromkeys(BLAS_THREAD_VARS, "1"))
  env.update({str(k): str(v) for k, v in (cfg.get("extra_env") or {}).items()})
  return env


def become_subreaper() -> bool:
  """Orphans of our programs get reparented to the worker, which reaps them (no zombies)."""
  try:
    return _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
  except (OSError, AttributeError):
    return False


def die_with_parent() -> bool:
  """SIGKILL the calling process when its parent exits: the zygote goes with its worker, and a
  program with its zygote (a worker killed by the pool leaves no sleeping program behind)."""
  try:
    return _libc().prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
  except (OSError, AttributeError):
    return False


def set_limits(cfg: dict) -> None:
  """Resource limits of the program's process (hard = soft, so it cannot raise them)."""

  def lim(which, value):
    value = int(value)
    try:
      resource.setrlimit(which, (value, value))
    except (ValueError, OSError):
      pass

  cpu = int(cfg["program_timeout_s"]) + 1
  lim(resource.RLIMIT_CPU, cpu)
  lim(resource.RLIMIT_AS, cfg["memory_mb"] * (1 << 20))
  lim(resource.RLIMIT_CORE, 0)
  lim(resource.RLIMIT_NOFILE, cfg["max_open_files"])
  if cfg.get("nproc"):
    lim(resource.RLIMIT_NPROC, cfg["nproc"])


def limit_file_size(nbytes: int) -> None:
  """Cap every file the program writes (stdout/stderr go to files); writes past it fail."""
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
  resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))


def drop_privileges(uid: int) -> None:
  os.setgroups([])
  os.setgid(uid)
  os.setuid(uid)


def drop_capabilities() -> bool:
  """Unprivileged path: a process forked inside the worker's user namespace holds every
  capability there (it could mount or chroot); clear them all and forbid regaining any."""
  try:  # (no ctypes import: the child has dropped it from sys.modules; _libc() is loaded)
    libc = _libc()
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    header = _LINUX_CAPABILITY_VERSION_3.to_bytes(4, sys.byteorder) + bytes(4)  # this process
    data = bytes(24)  # effective, permitted, inheritable, two 32-bit words each: all empty
    return libc.capset(header, data) == 0
  except (OSError, AttributeError):
    return False


def install_audit_hook(sandbox_dir: str, allow_fork: bool):
  """Adds the (irremovable) audit hook; returns set_trusted(bool) for the harness."""
  state = [True]
  root = os.path.realpath(sandbox_dir)
  me = os.getpid()
  realpath, fsdecode, isabs, join = (os.path.realpath, os.fsdecode, os.path.isabs, os.path.join)
  deny_prefixes = _DENIED_PREFIXES
  str_, int_ = str, int
  violation = SandboxViolation

  def inside(path) -> bool:
    try:
      p = fsdecode(path)
    except TypeError:
      return False
    if not isabs(p):
      p = join(root, p)
    p = realpath(p)
    return p == root or p.startswith(root + "/")

  def readable(path) -> bool:
    try:
      p = fsdecode(path)
    except TypeError:
      return False
    if not isabs(p):
      return True  # relative: below the sandbox cwd (writes are checked separately)
    if p in _DEV_OK:
      return True
    p = realpath(p)
    return not (
      p.startswith("/proc") or p.startswith("/sys") or (p.startswith("/dev") and p not in _DEV_OK)
    )

  def hook(event, args):
    if state[0]:
      return
    if event in _ALWAYS_DENIED or event.startswith(deny_prefixes):
      raise violation(f"sandbox: {event} is not allowed")
    if event == "open":
      path, mode, flags = (tuple(args) + (None, None, None))[:3]
      if isinstance(path, int_):
        if path > 2:
          raise violation("sandbox: opening file descriptors above 2 is not allowed")
        return
      writes = (isinstance(mode, str_) and any(c in mode for c in "wax+")) or (
        isinstance(flags, int_) and flags & _WRITE_FLAGS
      )
      if writes and not inside(path):
        raise violation(f"sandbox: writing outside the sandbox is not allowed: {path!r}")
      if not readable(path):
        raise violation(f"sandbox: reading {path!r} is not allowed")
      return
    if event == "import":
      if args and args[0] in _DENIED_IMPORTS:
        raise violation(f"sandbox: importing {args[0]} is not allowed")
      return
    if event == "object.__getattr__":
      if len(args) > 1 and args[1] in _FRAME_ATTRS:
        raise violation(f"sandbox: {args[1]} is not allowed")
      return
    if event == "os.fork":
      if not allow_fork:
        raise violation("sandbox: fork is not allowed")
      return
    if event == "os.kill":
      if args[0] != me:
        raise violation("sandbox: signalling other processes is not allowed")
      return
    if event in ("os.killpg", "signal.pidfd_send_signal"):
      raise violation(f"sandbox: {event} is not allowed")
    if event in ("os.listdir", "os.scandir"):
      if args and args[0] is not None and not isinstance(args[0], int_) and not readable(args[0]):
        raise violation(f"sandbox: listing {args[0]!r} is not allowed")
      return
    idx = _PATH_EVENTS.get(event)
    if idx is not None:
      for i in idx:
        if i < len(args) and not isinstance(args[i], int_) and not inside(args[i]):
          raise violation(f"sandbox: {event} outside the sandbox is not allowed")

  sys.addaudithook(hook)

  def set_trusted(value: bool) -> None:
    state[0] = value

  return set_trusted
