"""The benchmark scripts still run against today's API, on tiny sizes (their figures live in the
README; this only guards the scripts: ppo_step.py broke unnoticed when the batch became typed)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
  proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                        timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


@pytest.mark.slow
def test_ppo_step_benchmark_runs_and_prints_its_ratio():
  out = _run("benchmarks/ppo_step.py", "--layers", "2", "--steps", "1")
  assert "ratio:" in out and "% of the faster jnp.dot" in out


def test_decode_benchmark_runs_tiny_with_the_same_tokens_on_both_sides():
  out = _run("benchmarks/decode.py", "--models", "tiny", "--new_tokens", "16")
  assert "ratio" in out and "same greedy tokens (row 0, first 16): True" in out
