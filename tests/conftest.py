"""Hermetic test runs: every cache a test (or a subprocess it starts) writes goes to one temp dir.

The directory is shared by the whole run, xdist workers included, so slow cache fills (the Gemma
3 270M conversion, built datasets) happen once per run, never in the user's home directory, and
never reuse what an earlier run left there. `scripts/test.sh` creates it and exports
``STEPCODER_JAX_TEST_CACHE``; a plain ``pytest`` run creates one here, in the controller process,
before xdist starts its workers (they inherit the environment), and removes it at the end.
The variables are set when this file is imported: before any test module imports matplotlib,
transformers or jax, which read them at import.
"""

from __future__ import annotations

import os
import signal
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# A suite started in the background of a non-interactive shell (`cmd &`, nohup, some CI runners)
# inherits SIGINT ignored, and so would every process it starts: the Ctrl-C tests would then test
# nothing. Catching it here gives this process Python's handler and its children the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)

RUN_CACHE_VAR = "STEPCODER_JAX_TEST_CACHE"


def _run_cache() -> tuple[Path, bool]:
  """(the run's cache dir, whether this process created it and so must remove it)."""
  given = os.environ.get(RUN_CACHE_VAR)
  if given:
    Path(given).mkdir(parents=True, exist_ok=True)
    return Path(given), False
  made = Path(tempfile.mkdtemp(prefix="stepcoder_jax_tests-"))
  os.environ[RUN_CACHE_VAR] = str(made)
  return made, True


RUN_CACHE, _OWNED = _run_cache()

# Our cache root, and every library cache under ~ that a test could otherwise fill.
os.environ.update(
  {
    "STEPCODER_JAX_CACHE": str(RUN_CACHE / "stepcoder_jax"),
    "HF_HOME": str(RUN_CACHE / "huggingface"),
    "MPLCONFIGDIR": str(RUN_CACHE / "matplotlib"),
    "TFDS_CACHE_DIR": str(RUN_CACHE / "tensorflow_datasets"),
    "XDG_CACHE_HOME": str(RUN_CACHE / "xdg_cache"),
    "XDG_CONFIG_HOME": str(RUN_CACHE / "xdg_config"),
  }
)
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # a user's persistent XLA cache stays untouched


def pytest_unconfigure(config) -> None:
  if _OWNED:  # only the process that made it (xdist's controller ends after its workers)
    shutil.rmtree(RUN_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _gin_cleared_after_each_test():
  """Gin bindings are process-global: a test's `--gin.cccs.statements='bogus'` would otherwise be
  picked up by any later test in the same worker that builds a CCCSConfig (a CI failure seen under
  xdist, where the order varies)."""
  yield
  if "gin" in sys.modules:
    sys.modules["gin"].clear_config()
