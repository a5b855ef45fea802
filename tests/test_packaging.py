"""`pip install <wheel>` gives a working tool: the wheel holds the gin configs and declares the
dependencies, and the installed command runs from a directory outside the repository (the
quickstart's training commands too: tests/test_own_model_guide.py runs them from the wheel).

The wheel is built offline from a copy of the sources (no build directory in the checkout) and
installed `--no-deps` into a fresh virtual environment that sees the project's own packages
through a .pth file, so nothing is downloaded.
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("stepcoder_jax", "configs", "pyproject.toml", "setup.py", "README.md")


def _run(cmd, **kw):
  p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
  assert p.returncode == 0, f"{cmd}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
  return p


def build_wheel(tmp: Path) -> Path:
  src = tmp / "src"
  src.mkdir()
  for name in SOURCES:
    if (ROOT / name).is_dir():
      shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy2(ROOT / name, src / name)
  _run(
    [
      sys.executable,
      "-m",
      "pip",
      "wheel",
      "--no-deps",
      "--no-build-isolation",
      "--no-index",
      "-w",
      str(tmp / "dist"),
      str(src),
    ]
  )
  (wheel,) = (tmp / "dist").glob("stepcoder_jax-*.whl")
  return wheel


def layered_venv(tmp: Path, wheel: Path) -> Path:
  """A venv whose own site-packages holds the wheel, over the project's installed packages."""
  venv = tmp / "venv"
  _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
  py = venv / "bin" / "python"
  site = Path(
    _run(
      [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    ).stdout.strip()
  )
  (site / "project_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  _run(
    [
      sys.executable,
      "-m",
      "pip",
      "--python",
      str(py),
      "install",
      "--no-deps",
      "--no-index",
      str(wheel),
    ]
  )
  return venv


def installed_wheel(tmp: Path) -> Path:
  """A layered venv with the freshly built wheel installed; returns its bin directory."""
  return layered_venv(tmp, build_wheel(tmp)) / "bin"


def test_wheel_holds_configs_and_dependencies_and_runs_outside_the_repo(tmp_path):
  wheel = build_wheel(tmp_path)
  with zipfile.ZipFile(wheel) as z:
    names = set(z.namelist())
    (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = email.parser.Parser().parsestr(z.read(meta_name).decode())
  shipped = {
    f"stepcoder_jax/configs/{p.relative_to(ROOT / 'configs')}"
    for p in (ROOT / "configs").rglob("*.gin")
  }
  assert "stepcoder_jax/configs/experiments/cpu_demo_gemma.gin" in shipped
  assert shipped <= names, sorted(shipped - names)
  requires = meta.get_all("Requires-Dist")
  for pin in ("jax>=0.10.2", "torch<2.14,>=2.13.0", "gin-config", "transformers"):
    assert any(r.replace(" ", "").startswith(pin.split("<")[0].split(">")[0]) for r in requires)
  assert any(r.startswith("torch") and "<2.14" in r for r in requires), requires
  assert {"tpu", "gpu", "bench"} <= set(meta.get_all("Provides-Extra"))

  venv = layered_venv(tmp_path, wheel)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  exe = str(venv / "bin" / "stepcoder-jax")
  where = _run(
    [
      str(venv / "bin" / "python"),
      "-c",
      "import stepcoder_jax, stepcoder_jax.gin_setup as g; "
      "print(stepcoder_jax.__file__); print(g.configs_dir())",
    ],
    cwd=elsewhere,
  )
  module, configs = where.stdout.split()
  assert module.startswith(str(venv)) and configs.startswith(str(venv)), where.stdout

  env = dict(os.environ, STEPCODER_JAX_CACHE=str(tmp_path / "cache"))
  cfg = _run(
    [exe, "config", "--gin_file", "experiments/cpu_demo_gemma.gin"], cwd=elsewhere, env=env
  )
  assert "model.path = 'gemma3-270m'" in cfg.stdout, cfg.stdout[:2000]
  # sft -> train -> eval -> export from the installed wheel, outside the repository:
  # tests/test_own_model_guide.py runs docs/own_model.md's commands with this environment.
