"""Hostile programs: none may pass, and the host and the pool must be unharmed.

Each program below attacks the judge (or the machine) and would "pass" a naive harness. The tests
bound every attack: fork bombs by the audit hook and RLIMIT_NPROC, memory bombs by RLIMIT_AS,
endless output by RLIMIT_FSIZE, loops by the wall-time limit.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from execution_helpers import SQUARE, cfg, he, job, mbpp, stdio
from stepcoder_jax.execution import ExecutionPool

OK_BODY = "def f(x):\n  return x * x\n"
STDIO = stdio(["3\n"], ["9\n"], pid="t/hostile-stdio")


def corpus(sentinel: str, outside: str):
  """(name, job) pairs. ``sentinel`` must survive; ``outside`` must not be created."""
  p = SQUARE
  return [
    ("fork_bomb", job(p, "import os\ndef f(x):\n  while True:\n    os.fork()\n")),
    ("memory_bomb", job(p, "def f(x):\n  a = []\n  while True:\n    a.append(' ' * 10**7)\n")),
    ("big_alloc", job(p, "def f(x):\n  return len(bytearray(10**11))\n")),
    ("endless_output", job(STDIO, "while True:\n  print('x' * 10000)\n")),
    (
      "endless_stderr",
      job(p, "import sys\ndef f(x):\n  while True:\n    sys.stderr.write('y' * 10000)\n"),
    ),
    ("delete_outside", job(p, f"import os\nos.remove({sentinel!r})\n" + OK_BODY)),
    ("write_outside", job(p, f"open({outside!r}, 'w').write('pwned')\n" + OK_BODY)),
    (
      "write_via_os_open",
      job(p, f"import os\nos.close(os.open({outside!r}, os.O_CREAT | os.O_WRONLY))\n" + OK_BODY),
    ),
    (
      "symlink_escape",
      job(p, f"import os\nos.symlink({outside!r}, 'l')\nopen('l', 'w').write('x')\n" + OK_BODY),
    ),
    (
      "network",
      job(
        p,
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "s.connect(('1.1.1.1', 80))\n" + OK_BODY,
      ),
    ),
    ("kill_parent", job(p, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + OK_BODY)),
    ("kill_all", job(p, "import os, signal\nos.kill(-1, signal.SIGKILL)\n" + OK_BODY)),
    (
      "subprocess_kill",
      job(p, "import subprocess\nsubprocess.run(['kill', '-9', '-1'])\n" + OK_BODY),
    ),
    (
      "posixsubprocess_direct",
      job(p, "import subprocess\nsubprocess._posixsubprocess.fork_exec\n" + OK_BODY),
    ),
    (
      "multiprocessing",
      job(p, "import multiprocessing as mp\nmp.Process(target=print).start()\n" + OK_BODY),
    ),
    ("exit_zero", job(p, "import sys\ndef f(x):\n  sys.exit(0)\n")),
    ("os_exit_zero", job(p, "import os\ndef f(x):\n  os._exit(0)\n")),
    ("exit_at_import", job(p, "import os\nprint('passed')\nos._exit(0)\n")),
    ("print_passed", job(STDIO, "print('passed')\n")),
    (
      "eq_always_true",
      job(p, "class E:\n  def __eq__(self, o):\n    return True\ndef f(x):\n  return E()\n"),
    ),
    (
      "int_subclass_eq",
      job(
        p,
        "class E(int):\n  def __eq__(self, o):\n    return True\n"
        "  __hash__ = int.__hash__\n"
        "def f(x):\n  return E(0)\n",
      ),
    ),
    (
      "patch_builtins",
      job(
        he("f", "def check(candidate):\n  assert abs(candidate(2) - 4) < 1e-9\n"),
        "import builtins\nbuiltins.abs = lambda v: 0\ndef f(x):\n  return -1\n",
      ),
    ),
    (
      "patch_math",
      job(
        he("f", "import math\ndef check(candidate):\n  assert math.isclose(candidate(2), 4)\n"),
        "import math\nmath.isclose = lambda *a, **k: True\ndef f(x):\n  return -1\n",
      ),
    ),
    (
      "entry_is_class",
      job(
        p,
        "class E:\n  def __eq__(self, o):\n    return True\n"
        "class f:\n  def __new__(cls, x):\n    return E()\n",
      ),
    ),
    ("deep_recursion", job(p, "def f(x):\n  return f(x + 1)\n")),
    (
      "c_stack_overflow",
      job(p, "import sys\nsys.setrecursionlimit(10**8)\ndef f(x):\n  return f(x + 1) + 1\n"),
    ),
    ("ctypes_segfault", job(p, "import ctypes\nctypes.string_at(0)\n" + OK_BODY)),
    (
      "real_segfault",
      job(p, "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n" + OK_BODY),
    ),
    ("abort", job(p, "import os\nos.abort()\n" + OK_BODY)),
    (
      "thread_left_running",
      job(
        p,
        "import threading\n"
        "threading.Thread(target=lambda: [0 for _ in "
        "iter(int, 1)]).start()\n"
        "def f(x):\n  return None\n",
      ),
    ),
    (
      "ignore_signals_loop",
      job(
        p,
        "import signal\nfor s in (signal.SIGTERM, signal.SIGINT):\n"
        "  signal.signal(s, signal.SIG_IGN)\n"
        "def f(x):\n  while True:\n    pass\n",
      ),
    ),
    (
      "read_frames",
      job(
        p,
        "import sys\ndef f(x):\n  fr = sys._getframe(1)\n"
        "  fr.f_globals['check'] = lambda c: None\n  return 0\n",
      ),
    ),
    (
      "traceback_frames",
      job(
        p,
        "def f(x):\n  try:\n    1 / 0\n  except Exception as e:\n"
        "    tb = e.__traceback__\n"
        "    tb.tb_frame.f_back.f_globals.clear()\n  return 0\n",
      ),
    ),
    (
      "gc_scan",
      job(
        p,
        "import gc\ndef f(x):\n  for o in gc.get_objects():\n"
        "    if isinstance(o, dict) and 'check' in o:\n"
        "      o['check'] = lambda c: None\n  return 0\n",
      ),
    ),
    (
      "settrace",
      job(p, "import sys\nsys.settrace(lambda *a: None)\n" + OK_BODY.replace("x * x", "0")),
    ),
    ("proc_mem", job(p, "def f(x):\n  open('/proc/self/mem', 'rb').read(1)\n  return 0\n")),
    (
      "harness_module",
      job(
        p,
        "import sys\n"
        "mods = [m for m in sys.modules if m.startswith('stepcoder_jax')]\n"
        "assert not mods, mods\n"
        "def f(x):\n  return 0\n",
      ),
    ),
    (
      "forge_result_pipe",
      job(
        p,
        "import os\n"
        "for fd in range(3, 1024):\n  try:\n"
        "    os.write(fd, b'x\\t{\"e\":\"done\"}\\n')\n"
        "  except OSError:\n    pass\n"
        "def f(x):\n  return 0\n",
      ),
    ),
    (
      "patch_json",
      job(
        p,
        "import json\njson.dumps = lambda *a, **k: '{}'\n"
        "json.encoder.encode_basestring_ascii = lambda s: '\"ok\"'\n"
        "json.encoder.c_make_encoder = None\n"
        "def f(x):\n  return 0\n",
      ),
    ),
    (
      "replace_stdout",
      job(
        p,
        "import sys\nclass S:\n  def write(self, s):\n    pass\n"
        "  def flush(self):\n    sys._getframe(2).f_globals.clear()\n"
        "sys.__stdout__ = sys.stdout = S()\n"
        "def f(x):\n  return 0\n",
      ),
    ),
    (
      "exception_class_trick",
      job(
        p,
        "class X(Exception):\n"
        "  @property\n  def __class__(self):\n"
        "    return AssertionError\n"
        "def f(x):\n  raise X()\n",
      ),
    ),
    (
      "coverage_probe_junk",
      job(
        p,
        "class B:\n  def __bool__(self):\n    raise SystemExit(0)\n"
        "__cov__[0] = B()\n__cov__.append(B())\n"
        "def f(x):\n  return 0\n",
      ),
    ),
    (
      "mbpp_eq",
      job(
        mbpp("g", ["assert g(1) == 5"]),
        "class E(list):\n  def __eq__(s, o):\n    return True\ndef g(x):\n  return E()\n",
      ),
    ),
  ]


def _sandbox_processes(uids) -> list[str]:
  """Live (not zombie) processes running as one of ``uids`` (the pool's sandbox uids)."""
  out = []
  for d in os.listdir("/proc"):
    if not d.isdigit():
      continue
    try:
      st = os.stat(f"/proc/{d}")
      with open(f"/proc/{d}/stat") as f:
        state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
      continue
    if st.st_uid in uids and state != "Z":
      out.append(d)
  return out


def test_no_hostile_program_passes_and_pool_survives(tmp_path):
  sentinel = tmp_path / "sentinel.txt"
  sentinel.write_text("keep me")
  outside = str(tmp_path / "created_by_program.txt")
  cases = corpus(str(sentinel), outside)
  with ExecutionPool(cfg(workers=2)) as pool:
    pids = list(pool.worker_pids)
    uids = {i["uid"] for i in pool.worker_info}
    t0 = time.perf_counter()
    res = pool.run([j for _, j in cases])
    took = time.perf_counter() - t0
    verdicts = {name: (r.outcome, r.error[:120]) for (name, _), r in zip(cases, res)}
    passed = [name for name, (o, _) in verdicts.items() if o == "passed"]
    assert not passed, {n: verdicts[n] for n in passed}
    assert sentinel.read_text() == "keep me"
    assert not os.path.exists(outside)
    assert pool.worker_pids == pids, "a worker died"
    # Bounded: every attack ends within its limits (2 s per test, 8 s per program).
    assert took < 60, took
    # Throughput is back right after: a batch of honest programs passes, quickly.
    t1 = time.perf_counter()
    ok = pool.run([job(SQUARE, OK_BODY) for _ in range(20)])
    assert all(r.passed for r in ok)
    assert time.perf_counter() - t1 < 15
    assert verdicts["kill_parent"][0] == "runtime_error"
    assert verdicts["eq_always_true"][0] == "failed"
    assert verdicts["endless_output"][0] in ("runtime_error", "failed")
    assert verdicts["memory_bomb"][0] == "runtime_error"
    assert verdicts["forge_result_pipe"][0] == "runtime_error"
    assert verdicts["patch_json"][0] == "failed"  # the harness still reports truthfully
    assert verdicts["network"][0] == "runtime_error" and "socket" in verdicts["network"][1]
    assert verdicts["exception_class_trick"][0] == "runtime_error"
  if os.geteuid() == 0:
    time.sleep(0.2)
    assert not _sandbox_processes(uids)


@pytest.mark.skipif(
  os.geteuid() != 0,
  reason="RLIMIT_NPROC is only exact under a sandbox uid "
  "(root pools); unprivileged pools block fork in the audit hook instead",
)
def test_fork_bomb_bounded_by_nproc_when_fork_is_allowed():
  bomb = job(
    SQUARE,
    "import os, time\ndef f(x):\n  while True:\n    try:\n      os.fork()\n"
    "    except OSError:\n      time.sleep(0.01)\n",
  )
  with ExecutionPool(cfg(workers=1, allow_fork=True, max_processes=16, timeout_s=1.0)) as pool:
    uids = {i["uid"] for i in pool.worker_info}
    (r,) = pool.run([bomb])
    assert r.outcome == "timeout"
    (ok,) = pool.run([job(SQUARE, OK_BODY)])
    assert ok.passed
  time.sleep(0.2)
  assert not _sandbox_processes(uids)


_UNPRIVILEGED = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
_UNPRIVILEGED_CHECK = """
import json, os, sys
sys.path[:0] = [sys.argv[1], os.path.dirname(sys.argv[1])]  # this checkout's package and helpers
from execution_helpers import SQUARE, job, stdio
from stepcoder_jax.execution import ExecutionConfig, ExecutionPool
ok = "def f(x):\\n  return x * x\\n"
jobs = [job(SQUARE, ok),
        job(SQUARE, "import os, signal\\nos.kill(os.getppid(), signal.SIGKILL)\\n" + ok),
        job(SQUARE, "import socket\\nsocket.socket().connect(('1.1.1.1', 80))\\n" + ok),
        job(SQUARE, "import os\\ndef f(x):\\n  while True:\\n    os.fork()\\n"),
        job(stdio(["3\\n"], ["6\\n"]), "import threading\\ndef m():\\n  print(int(input()) * 2)\\n"
            "threading.Thread(target=m).start()\\n"),
        job(SQUARE, "import os\\ndef f(x):\\n  raise RuntimeError(open(%r).read() + "
            "os.environ.get('MY_SECRET_TOKEN', ''))\\n" % sys.argv[2]),
        job(SQUARE, "import colorsys, numpy\\n" + ok),
        job(SQUARE, "import os\\nos.chroot('.')\\n" + ok)]  # capabilities of the user namespace
with ExecutionPool(ExecutionConfig(workers=1)) as pool:
  res = pool.run(jobs)
  print(json.dumps({"outcomes": [r.outcome for r in res], "errors": [r.error for r in res],
                    "info": pool.worker_info}))
"""


def _as_nobody(cmd: list[str], scratch: str) -> list[str]:
  """``cmd`` as uid 65534. Where the interpreter lives below a directory others cannot enter
  (pyenv under a 0700 /root here), it runs in a mount namespace of its own in which that
  directory is an empty 0755 tmpfs holding only the interpreter's tree: the host is unchanged."""
  path, closed = os.path.realpath(sys.base_prefix), None
  while path != "/":
    path = os.path.dirname(path)
    if not os.stat(path).st_mode & 0o001:
      closed = path
  if closed is None:
    return _UNPRIVILEGED + cmd
  inner = os.path.realpath(sys.base_prefix)[len(closed) + 1 :].split("/")[0]
  keep = os.path.join(scratch, "keep")
  os.makedirs(keep, exist_ok=True)
  q = shlex.quote
  script = (
    f"mount --bind {q(os.path.join(closed, inner))} {q(keep)} && "
    f"mount -t tmpfs -o mode=755 tmpfs {q(closed)} && "
    f"mkdir {q(os.path.join(closed, inner))}"
    f" && mount --move {q(keep)} {q(os.path.join(closed, inner))} && exec "
    + " ".join(q(c) for c in _UNPRIVILEGED + cmd)
  )
  return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def _unprivileged_python_runs() -> bool:
  """Root, setpriv, unshare, and an interpreter (and this checkout) that uid 65534 can run."""
  if os.geteuid() != 0 or not shutil.which("setpriv") or not shutil.which("unshare"):
    return False
  spawn = (
    "import subprocess, sys; subprocess.run([sys.executable, '-c', "
    "'import stepcoder_jax.execution.worker'], check=True)"
  )  # as the pool does
  with tempfile.TemporaryDirectory() as scratch:
    r = subprocess.run(
      _as_nobody([sys.executable, "-c", spawn], scratch),
      cwd="/",
      capture_output=True,
      timeout=900,
      check=False,
    )
  return r.returncode == 0


@pytest.mark.skipif(
  not _unprivileged_python_runs(),
  reason="needs root, setpriv, unshare and an interpreter uid 65534 can run",
)
def test_unprivileged_pool_judges_and_confines():
  """The non-root path: a user + network + mount namespace instead of a sandbox uid. A canary in
  the user's home (readable by that user on the host) and a secret in the pool's environment
  stay out of reach of programs."""
  tests_dir = os.path.dirname(os.path.abspath(__file__))
  with tempfile.TemporaryDirectory() as scratch:  # /tmp: pytest's tmp_path is 0700 root's
    os.chmod(scratch, 0o755)
    home = os.path.join(scratch, "home")
    token = os.path.join(home, ".cache", "huggingface", "token")
    os.makedirs(os.path.dirname(token))
    with open(token, "w") as f:
      f.write("canary-in-home")
    for p in (home, os.path.dirname(os.path.dirname(token)), os.path.dirname(token), token):
      os.chown(p, 65534, 65534)
    r = subprocess.run(
      _as_nobody([sys.executable, "-c", _UNPRIVILEGED_CHECK, tests_dir, token], scratch),
      capture_output=True,
      text=True,
      timeout=900,
      check=True,
      cwd="/",
      env=dict(os.environ, HOME=home, MY_SECRET_TOKEN="hunter2"),
    )
  out = json.loads(r.stdout.strip().splitlines()[-1])
  info = out["info"][0]
  assert info["uid"] is None and info["netns"] in ("netns", "no-netns")
  assert out["outcomes"] == [
    "passed",
    "runtime_error",
    "runtime_error",
    "runtime_error",
    "passed",
    "runtime_error",
    "passed",
    "runtime_error",
  ], out
  assert "canary" not in out["errors"][5] and "hunter2" not in out["errors"][5]
  assert "FileNotFoundError" in out["errors"][5], out["errors"][5]
  assert "PermissionError" in out["errors"][7], out["errors"][7]
  if info["netns"] == "netns":  # a user namespace was granted: the mounts are required too
    assert info["files"] == "capped, private root", info
