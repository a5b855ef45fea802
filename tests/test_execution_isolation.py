"""What a program can store, see and leave behind (issue 14), on the path this machine runs.

Each test here failed on the executor before its mount namespace, minimal environment and
directory clean-up (b2c4d72): a program filled /dev/shm without bound, read the trainer's
environment and the project's files, and killed workers left their programs' directories.
The unprivileged path's counterpart is in test_execution_hostile.py.
"""

import dataclasses
import errno
import os
import re
import subprocess
import threading
import time

import pytest

from execution_helpers import SQUARE, cfg, job, stdio
from stepcoder_jax.execution import ExecutionPool
from stepcoder_jax.execution.pool import _PKG_PARENT

FILL = """import os
def f(x):
  n = 0
  try:
    while n < 300:  # stop at 300 MB if nothing refuses
      with open(f"fill{n}", "wb") as fh:
        fh.write(b"x" * (1 << 20))
      n += 1
  except OSError as e:
    raise RuntimeError(f"refused after {n} MB: errno {e.errno}")
  raise RuntimeError(f"wrote {n} MB")
"""


def _meminfo_kb(field: str) -> int:
  with open("/proc/meminfo") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1])
  raise KeyError(field)


class _Sampler:
  """Peak of /proc/meminfo's Shmem (tmpfs pages: RAM) and lowest MemAvailable while running."""

  def __init__(self):
    self.shmem0, self.avail0 = _meminfo_kb("Shmem"), _meminfo_kb("MemAvailable")
    self.shmem_peak, self.avail_min = self.shmem0, self.avail0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      self.shmem_peak = max(self.shmem_peak, _meminfo_kb("Shmem"))
      self.avail_min = min(self.avail_min, _meminfo_kb("MemAvailable"))
      time.sleep(0.002)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()


def test_directory_fill_stops_at_the_cap():
  cap_mb = 32
  with ExecutionPool(
    cfg(workers=1, max_dir_mb=cap_mb, program_timeout_s=20.0, timeout_s=15.0)
  ) as pool:
    assert pool.worker_info[0]["files"].startswith("capped"), pool.worker_info
    with _Sampler() as mem:
      (r,) = pool.run([job(SQUARE, FILL)])
  m = re.search(r"refused after (\d+) MB: errno (\d+)", r.error)
  assert m, r.error
  stored, err = int(m.group(1)), int(m.group(2))
  assert err == errno.ENOSPC
  assert cap_mb - 4 <= stored <= cap_mb
  # Shmem counts every tmpfs page, ours included: it rose by at most the cap (plus what other
  # processes put in /dev/shm meanwhile). MemAvailable also moves with everything else running
  # on the host, so it is printed, not asserted.
  grew_mb = (mem.shmem_peak - mem.shmem0) / 1024
  print(f"shmem +{grew_mb:.1f} MB, MemAvailable -{(mem.avail0 - mem.avail_min) / 1024:.1f} MB")
  assert grew_mb < cap_mb + 16, grew_mb


def test_secret_in_the_pools_environment_never_reaches_a_result(monkeypatch):
  monkeypatch.setenv("MY_SECRET_TOKEN", "hunter2")
  jobs = [
    job(SQUARE, "import os\ndef f(x):\n  raise RuntimeError(os.environ['MY_SECRET_TOKEN'])\n"),
    job(
      SQUARE,
      "import os\nprint(os.environ)\ndef f(x):\n  raise RuntimeError(repr(dict(os.environ)))\n",
    ),
    job(stdio(["1\n"], ["hunter2\n"]), "import os\nprint(os.environ.get('MY_SECRET_TOKEN'))\n"),
    job(
      SQUARE,
      "import os\ndef f(x):\n  raise RuntimeError(' '.join(sorted(os.environ)) + "
      "' HOME=' + os.environ['HOME'] + ' CWD=' + os.getcwd() + ' S=' + "
      "os.environ['MY_SETTING'])\n",
    ),
  ]
  with ExecutionPool(
    cfg(workers=1, max_error_chars=100_000, extra_env={"MY_SETTING": "42"})
  ) as pool:
    res = pool.run(jobs)
    worker_pid = pool.worker_pids[0]
    with open(f"/proc/{worker_pid}/environ", "rb") as f:
      worker_env = f.read()
  for r in res:
    assert "hunter2" not in repr(dataclasses.astuple(r)), r
  assert [r.outcome for r in res] == ["runtime_error", "runtime_error", "failed", "runtime_error"]
  assert "KeyError" in res[0].error
  # Programs inherit the worker's initial environment block as memory: it holds no secret.
  assert b"hunter2" not in worker_env
  names, home, cwd, setting = re.search(
    r"RuntimeError: (.*) HOME=(\S+) CWD=(\S+) S=(\S+)", res[3].error
  ).groups()
  assert set(names.split()) <= {
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "PYTHONHASHSEED",
    "HOME",
    "TMPDIR",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MY_SETTING",
  }, names
  assert home == cwd and setting == "42"


READ_ALL = """import json
def f(x):
  seen = {}
  for p in PATHS:
    try:
      with open(p) as fh:
        seen[p] = fh.read()[:40]
    except OSError as e:
      seen[p] = type(e).__name__
  raise RuntimeError(json.dumps(seen))
"""


@pytest.mark.skipif(
  os.geteuid() != 0,
  reason="the root path (sandbox uid); the unprivileged "
  "path is tested in test_execution_hostile.py",
)
def test_program_sees_no_user_or_project_files(tmp_path):
  home = tmp_path / "home"
  (home / ".cache" / "huggingface").mkdir(parents=True)
  token = home / ".cache" / "huggingface" / "token"
  token.write_text("canary-home")
  token.chmod(0o644)
  for d in (tmp_path, home, home / ".cache", home / ".cache" / "huggingface"):
    d.chmod(0o755)  # readable by the sandbox uid on today's file system: only the mount hides it
  paths = [
    str(token),
    os.path.join(_PKG_PARENT, "README.md"),
    "/root/.bashrc",
    "/etc/passwd",
    "/proc/self/environ",
  ]
  program = f"PATHS = {paths!r}\n" + READ_ALL
  with ExecutionPool(cfg(workers=1, max_error_chars=10_000)) as pool:
    assert pool.worker_info[0]["files"] == "capped, private root", pool.worker_info
    (r,) = pool.run([job(SQUARE, program)])
  seen = re.search(r"RuntimeError: (\{.*\})", r.error)
  assert seen, r.error
  import json  # pylint: disable=import-outside-toplevel

  seen = json.loads(seen.group(1))
  # Not merely unreadable: absent from the program's file system (ENOENT). /proc/self/environ is
  # refused by the audit hook first (PermissionError) and has no /proc under it either.
  assert {p: seen[p] for p in paths[:4]} == dict.fromkeys(paths[:4], "FileNotFoundError"), seen
  assert seen[paths[4]] in ("PermissionError", "SandboxViolation", "FileNotFoundError"), seen


@pytest.mark.skipif(os.geteuid() != 0, reason="the sandbox uid exists on the root path only")
def test_sandbox_uid_imports_the_standard_library():
  """The private root's directories are 0755, so the sandbox uid reaches an interpreter under a
  0700 home (pyenv under /root here): modules nobody preloaded import, shared libraries too."""
  ok = (
    "import colorsys, sqlite3\nimport numpy as np\n"
    "def f(x):\n  return int(np.int64(x)) * x + sqlite3.connect(':memory:').execute("
    "'select 0').fetchone()[0] + int(colorsys.rgb_to_hsv(0, 0, 0)[0])\n"
  )
  with ExecutionPool(cfg(workers=1)) as pool:
    (r,) = pool.run([job(SQUARE, ok)])
  assert r.passed, r.error


def test_pool_start_removes_dead_pools_directories(tmp_path):
  dead = subprocess.Popen(["true"])
  dead.wait()
  stale = tmp_path / f"scj-{dead.pid}-{'0' * 16}"
  (stale / "sub").mkdir(parents=True)
  (stale / "sub" / "leftover").write_text("x" * 1000)
  alive = tmp_path / f"scj-{os.getpid()}-{'1' * 16}"
  alive.mkdir()
  other = tmp_path / "scj-not-ours"
  other.mkdir()
  with ExecutionPool(cfg(workers=2, sandbox_root=str(tmp_path))) as pool:
    assert not stale.exists()
    mine = {os.path.basename(i["dir"]) for i in pool.worker_info}
    assert len(mine) == 2 and mine <= set(os.listdir(tmp_path))
    assert all(
      pool.run([job(SQUARE, "def f(x):\n  return x * x\n")] * 4)[i].passed for i in range(4)
    )
  assert sorted(os.listdir(tmp_path)) == sorted([alive.name, other.name])


@pytest.mark.parametrize("mount_namespace", [True, False])
def test_no_directory_survives_a_killed_worker(tmp_path, mount_namespace):
  """With a mount namespace the program's files die with it; without, the pool removes them."""
  writer = (
    "import os, time\ndef f(x):\n  os.mkdir('d')\n"
    "  open('d/data', 'w').write('x' * 100000)\n  time.sleep(30)\n"
  )
  with ExecutionPool(
    cfg(
      workers=1,
      sandbox_root=str(tmp_path),
      timeout_s=2.0,
      program_timeout_s=4.0,
      mount_namespace=mount_namespace,
    )
  ) as pool:
    first = pool.worker_pids[0]
    fut = pool.submit([job(SQUARE, writer)])
    time.sleep(1.0)  # the program is asleep in its directory
    os.kill(first, 9)
    (r,) = fut.result()
    assert r.outcome in ("timeout", "runtime_error")
    assert pool.replaced == 1
    assert not [n for n in os.listdir(tmp_path) if n.startswith(f"scj-{first}-")]
    assert not [n for n in os.listdir(tmp_path) if not n.startswith("scj-")]
  assert os.listdir(tmp_path) == []
