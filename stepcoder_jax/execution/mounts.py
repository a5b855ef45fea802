"""Mount-namespace confinement of programs' files (worker and zygote side, Linux only).

Two steps, both in mount namespaces of our own so the host never sees them:
  * ``cap_directory`` (worker): the worker's directory becomes a tmpfs of bounded size and inode
    count, so what a program stores is capped by the kernel (writes past it fail with ENOSPC)
    instead of landing in the host's /dev/shm, which is RAM. When the worker's namespace dies (it
    exits or is killed), the tmpfs and everything in it go with it.
  * ``private_root`` (zygote, once): a read-only tmpfs root holding only read-only bind mounts of
    the interpreter, its library directories and shared libraries, a few device nodes, and the
    worker's directory, each at its own absolute path (so ``sys.path`` stays valid); then
    ``pivot_root`` into it and detach the old root. Programs forked afterwards see nothing of the
    user's home, the project, /proc or /tmp. Intermediate directories are 0755, so a sandbox uid
    can reach an interpreter installed under a 0700 home (e.g. pyenv under /root).
Both need CAP_SYS_ADMIN in the namespace: root has it; the unprivileged path has it inside the
user namespace the worker creates first (``sandbox.own_user_namespace``).
"""

from __future__ import annotations

import errno
import os
import site
import sys

from stepcoder_jax.execution import sandbox

CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
_libc = sandbox._libc  # pylint: disable=protected-access  # one libc handle per worker
_OLD_ROOT = ".old-root"
# Flags a read-only remount of a bind mount must keep (inside a user namespace the kernel locks
# them and refuses a remount that would clear one).
_KEEP_FLAGS = (
  (os.ST_NOSUID, MS_NOSUID),
  (os.ST_NODEV, MS_NODEV),
  (os.ST_NOEXEC, MS_NOEXEC),
  (os.ST_NOATIME, MS_NOATIME),
  (os.ST_NODIRATIME, MS_NODIRATIME),
  (os.ST_RELATIME, MS_RELATIME),
)
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# Files the dynamic loader reads when a module loads a shared library for the first time.
_LOADER_FILES = ("/etc/ld.so.cache",)


def _check(ret: int, what: str) -> None:
  if ret != 0:
    err = sandbox.libc_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(
  source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
  enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
  _check(_libc().mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def new_mount_namespace() -> None:
  """A private copy of the mount table: nothing mounted from now on reaches the host."""
  _check(_libc().unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
  _mount(None, "/", None, MS_REC | MS_PRIVATE)


def cap_directory(path: str, max_mb: int, max_files: int) -> None:
  """Mount a tmpfs of at most ``max_mb`` MiB and ``max_files`` inodes on ``path`` (an existing
  directory), in a new mount namespace of the calling process."""
  new_mount_namespace()
  _mount(
    "tmpfs",
    path,
    "tmpfs",
    MS_NOSUID | MS_NODEV,
    f"size={int(max_mb)}m,nr_inodes={int(max_files)},mode=0711",
  )


def _bind_readonly(source: str, target: str) -> None:
  _mount(source, target, None, MS_BIND | MS_REC)
  keep = 0
  flags = os.statvfs(target).f_flag
  for st, ms in _KEEP_FLAGS:
    if flags & st:
      keep |= ms
  _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | keep)


def _make_path(top: str, path: str, is_dir: bool) -> str:
  """Create ``path`` below ``top`` (0755 directories, or an empty file to bind onto)."""
  target = top + path
  os.makedirs(target if is_dir else os.path.dirname(target), mode=0o755, exist_ok=True)
  if not is_dir and not os.path.exists(target):
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
  return target


def visible_paths() -> list[str]:
  """What programs need to see (besides their directory): the interpreter's installation, the
  site-packages directories (the project itself is not among them), the system's library
  directories, the loader cache and a few device nodes. Real paths, outermost first, deduped."""
  wanted = [sys.base_prefix, sys.base_exec_prefix, *site.getsitepackages()]
  if site.ENABLE_USER_SITE:
    wanted.append(site.getusersitepackages())
  # /lib* are links into /usr on merged-/usr systems (deduped below), directories elsewhere.
  wanted += ["/usr", "/lib", "/lib64", "/lib32", *_LOADER_FILES, *_DEVICES]
  out: list[str] = []
  for p in sorted({os.path.realpath(p) for p in wanted if os.path.exists(p)}):
    if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
      out.append(p)
  return out


def private_root(workdir: str) -> None:
  """Switch the calling process (the zygote) into a read-only root showing ``visible_paths()``
  and ``workdir`` only (see module docstring). Raises OSError if any step fails."""
  new_mount_namespace()
  top = os.path.join(workdir, ".root")
  os.makedirs(top, 0o755, exist_ok=True)
  _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
  for path in visible_paths():
    _bind_readonly(path, _make_path(top, path, os.path.isdir(path)))
  for name in os.listdir("/"):  # merged-/usr systems: /lib -> usr/lib and friends
    link = "/" + name
    if os.path.islink(link) and os.readlink(link).lstrip("/").startswith("usr/"):
      os.symlink(os.readlink(link), top + link)
  # The worker's directory, not recursively: ``top`` is mounted inside it.
  _mount(workdir, _make_path(top, workdir, True), None, MS_BIND)
  os.mkdir(os.path.join(top, _OLD_ROOT), 0o700)
  pivot = getattr(_libc(), "pivot_root", None)  # not every C library exports it
  if pivot is None:
    raise OSError(errno.ENOSYS, "this libc has no pivot_root")
  _check(pivot(os.fsencode(top), os.fsencode(top + "/" + _OLD_ROOT)), "pivot_root")
  try:  # from here on a failure must not leave the old root reachable: not an OSError
    os.chdir("/")
    _check(_libc().umount2(os.fsencode("/" + _OLD_ROOT), MNT_DETACH), "umount old root")
    os.rmdir("/" + _OLD_ROOT)
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
  except OSError as e:
    raise RuntimeError(f"private root left half done: {e}") from e
