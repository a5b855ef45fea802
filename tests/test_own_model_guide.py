"""docs/own_model.md's commands, run as written: every ```bash block of the guide, in order, in one
shell in an empty directory outside the repository (the only thing substituted), with
`stepcoder-jax` and `python` of a fresh environment where the package is installed from its wheel
(`pip install <wheel>`, tests/test_packaging.py). Then what the guide says they leave is
checked."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "own_model.md"


def guide_blocks(lang: str) -> list[str]:
  return re.findall(rf"^```{lang}\n(.*?)^```", GUIDE.read_text(), flags=re.M | re.S)


def test_the_example_line_is_a_valid_problem_and_is_in_the_file_the_guide_writes():
  from stepcoder_jax.data.record import Problem

  (line,) = guide_blocks("json")
  problem = Problem.from_dict(json.loads(line))
  assert problem.test_kind == "call" and problem.canonical_solution
  assert line.strip() in guide_blocks("bash")[0]


@pytest.mark.slow
def test_guide_commands_run_as_written(tmp_path):
  from test_packaging import installed_wheel

  where = "python -c \"import stepcoder_jax as s; print('STEPCODER_JAX_FROM', s.__file__)\""
  script = "\n".join(["set -euo pipefail", *guide_blocks("bash"), where])
  bin_dir = str(installed_wheel(tmp_path))  # stepcoder-jax and python of the wheel's venv
  env = dict(
    os.environ,
    PATH=bin_dir + os.pathsep + os.environ["PATH"],
    STEPCODER_JAX_CACHE=str(tmp_path / "cache"),
  )
  work = tmp_path / "work"
  work.mkdir()
  p = subprocess.run(
    ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=900
  )
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
  assert "passed 4, failed 0" in p.stdout  # judge: every reference solution passes
  assert p.stdout.split("STEPCODER_JAX_FROM ")[1].startswith(str(tmp_path / "venv"))  # the wheel
  assert (work / "runs" / "sft" / "config.json").is_file()
  assert (work / "runs" / "rl" / "model" / "config.json").is_file()
  assert "final policy: runs/rl/model" in p.stdout
  assert json.loads((work / "runs" / "eval" / "eval.json").read_text())["table"]
  card = (work / "my_model" / "README.md").read_text()
  assert "Base model**: tiny-llama" in card and "my_problems.jsonl (4 problems)" in card
  assert "greedy pass@1" in card  # the evaluation table given with --results
  weights = work / "my_model" / "model.safetensors"
  assert weights.stat().st_mode & 0o044 == 0o044  # readable like the other files
