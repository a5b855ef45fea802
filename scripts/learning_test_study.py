"""Seed study of tests/test_learning.py's paired gain (how often the test would fail).

Usage: python scripts/learning_test_study.py SEEDS PERTURB OUT.jsonl
  SEEDS: e.g. 0-9; PERTURB: the relative parameter noise after SFT (0: none), standing in for
  another machine's numerics. Appends one JSON line per seed: seed, perturb, gain, the learning
  run's and the frozen run's rewards.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main(argv: list[str]) -> int:
  if len(argv) != 3:
    print(__doc__.strip().splitlines()[2], file=sys.stderr)
    return 2
  import test_learning as tl
  from stepcoder_jax.data.record import read_jsonl

  lo, _, hi = argv[0].partition("-")
  perturb, out = float(argv[1]), Path(argv[2])
  problems = read_jsonl(str(tl.FIXTURE))
  for seed in range(int(lo), int(hi or lo) + 1):
    warm = tl.warm_up(problems, seed, perturb)
    with tempfile.TemporaryDirectory() as d:
      gain, learned, frozen = tl.paired_gain(problems, warm, Path(d), seed)
    row = {"seed": seed, "perturb": perturb, "gain": round(gain, 4),
           "learned": [round(r, 4) for r in learned], "frozen": [round(r, 4) for r in frozen]}
    with out.open("a") as f:
      f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
