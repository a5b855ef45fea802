"""The benchmark scripts still run against today's API, on tiny sizes (their figures live in the
README; this only guards the scripts: ppo_step.py broke unnoticed when the batch became typed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
  proc = subprocess.run(
    [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=600
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


@pytest.mark.slow
def test_ppo_step_benchmark_runs_and_prints_its_ratio():
  out = _run("benchmarks/ppo_step.py", "--layers", "2", "--steps", "1")
  assert "ratio:" in out and "% of the faster jnp.dot" in out


def test_decode_benchmark_runs_tiny_with_the_same_tokens_on_both_sides():
  out = _run("benchmarks/decode.py", "--models", "tiny", "--new_tokens", "16")
  assert "ratio" in out and "same greedy tokens (row 0, first 16): True" in out


def _vocab_bench(*extra: str) -> tuple[list[str], str]:
  """The per-prompt lines and the whole output of a tiny output_vocab.py run."""
  out = _run(
    "benchmarks/output_vocab.py",
    "--tiny",
    "--prompts",
    "5",
    "--batch",
    "4",
    "--max_new_tokens",
    "12",
    *extra,
  )
  return [l for l in out.splitlines() if l.startswith("prompt ")], out


def test_output_vocab_benchmark_summary_agrees_with_its_per_prompt_lines():
  rows, out = _vocab_bench()  # a random half of the tiny model's ids
  assert len(rows) == 5 and "decode tok/s restricted / full:" in out
  same = sum("identical" in r for r in rows)
  assert f"greedy identical on {same} of 5 prompts" in out
  outside = sum(int(r.rsplit(" ", 1)[1]) for r in rows)
  assert f"full-vocabulary greedy tokens outside the subset: {outside} " in out
  # A near-uniform random model loses about half its mass to the dropped ids: every prompt whose
  # first token agrees shows a log-prob gap, and a prompt with no outside token cannot differ.
  for r in rows:
    if "first differs at 0" not in r:
      assert float(r.split("agreeing prefix ")[1].split(",")[0]) > 0.1, r
    if r.endswith("outside 0"):
      assert "identical" in r, r


def test_output_vocab_benchmark_with_every_id_changes_nothing(tmp_path):
  from stepcoder_jax.models import output_vocab
  from stepcoder_jax.models.tokenizer import tiny_tokenizer

  n = len(tiny_tokenizer())
  output_vocab.save(tmp_path / "all.npz", range(n), n, "every id")
  rows, out = _vocab_bench("--vocab", str(tmp_path / "all.npz"))
  assert f"output vocabulary {n} of {n} ids" in out
  assert "greedy identical on 5 of 5 prompts" in out and len(rows) == 5
  assert "full-vocabulary greedy tokens outside the subset: 0 (in 0 prompts)" in out
  gap = float(out.split("over agreeing prefixes: max ")[1].split(",")[0])
  assert gap < 1e-5


def test_decode_profile_runs_tiny_and_reads_the_decode_loop():
  out = _run(
    "benchmarks/decode_profile.py",
    *("--model", "tiny-gemma3", "--rows", "2", "--prompt", "16", "--new", "4"),
  )
  assert "one decode step" in out and "draw + log-softmax over 384" in out  # its tokenizer
  assert re.search(r"copies into f32\[2,2,16,20\] \(cache-sized\) per decode step: \d+", out)
