"""Seed study of tests/test_learning.py: how often its assertion would fail.

Usage: python scripts/learning_test_study.py SEEDS PERTURB ITERATIONS OUT.jsonl
  SEEDS: e.g. 0-9; PERTURB: relative noise on every parameter after SFT (0: none), a stand-in for
  another machine's rounding; ITERATIONS: PPO iterations to run (at least the test's). Appends one
  JSON line per seed: the SFT policy's probability of the right answer and the one after each
  iteration ("probs", index i = after i iterations), and the per-iteration mean rewards.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main(argv: list[str]) -> int:
  if len(argv) != 4:
    print(__doc__.strip().splitlines()[2], file=sys.stderr)
    return 2
  import test_learning as tl
  from stepcoder_jax.data.record import read_jsonl

  lo, _, hi = argv[0].partition("-")
  perturb, out = float(argv[1]), Path(argv[3])
  tl.ITERATIONS = int(argv[2])
  problems = read_jsonl(str(tl.FIXTURE))
  for seed in range(int(lo), int(hi or lo) + 1):
    warm = tl.warm_up(problems, seed, perturb)
    tok = warm[1]
    probs = [tl.answer_probability(tl.sft_policy(warm), tok, problems)]

    def record(trainer, _, probs=probs, tok=tok):
      probs.append(tl.answer_probability(trainer.policy_model(), tok, problems))

    with tempfile.TemporaryDirectory() as d:
      rewards, _ = tl.train(problems, warm, Path(d), tl.POLICY_LR, seed, on_iteration=record)
    row = {
      "seed": seed,
      "perturb": perturb,
      "probs": [round(p, 4) for p in probs],
      "rewards": [round(r, 4) for r in rewards],
    }
    with out.open("a") as f:
      f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
