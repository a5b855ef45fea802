"""benchmarks/rl_iteration.py --tiny runs both sides end to end and reports what it promises."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_run_reports_both_sides_and_ends_with_the_speedup(tmp_path):
  pytest.importorskip("trl")
  out = tmp_path / "r.json"
  proc = subprocess.run(
    [
      sys.executable,
      str(ROOT / "benchmarks" / "rl_iteration.py"),
      "--tiny",
      "--sides",
      "trl,grpo",
      "--prompts",
      "2",
      "--group",
      "2",
      "--max_new_tokens",
      "8",
      "--json",
      str(out),
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  last = proc.stdout.strip().splitlines()[-1]
  assert re.fullmatch(r"speedup vs TRL: \d+\.\d\dx", last), last
  res = json.loads(out.read_text())["results"]
  for side in ("trl", "grpo"):
    its = res[side]["iterations"]
    assert len(its) == 2 and res[side]["peak_rss_gb"] > 0
    for it in its:
      assert it["rows"] == 4 and 0 < it["tokens"] <= 4 * 8
      assert 0 < it["generation_s"] < it["iteration_s"] and it["update_s"] > 0
      assert it["scoring_s"] > 0 and it["judging_s"] >= 0
