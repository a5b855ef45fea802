"""The embedded default run (see commands/demo.py): base -> SFT -> StepCoder, pass@1 before/after."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from stepcoder_jax.models.config import ModelSpec
from stepcoder_jax.rl.config import CCCSConfig, TrainConfig
from stepcoder_jax.runs import pipeline
from stepcoder_jax.runs.config import EvalConfig, SFTConfig

_log = logging.getLogger(__name__)
STAGES = ("base", "sft", "stepcoder")


def _pass_at_1(report) -> dict[str, float]:
  """pass@1 per difficulty group (greedy when the eval is greedy)."""
  out = {}
  for group, row in report.table.items():
    v = row.get("pass@1")
    if v is None:
      v = row.get("greedy pass@1")
    out[group] = float(v) if v is not None else float("nan")
  return out


def comparison_table(results: dict[str, dict[str, float]], counts: dict[str, int]) -> str:
  """Markdown: one row per difficulty, one column per stage (pass@1 in %)."""
  groups = list(counts)
  head = "| difficulty | problems | " + " | ".join(f"{s} pass@1" for s in results) + " |"
  rule = "|---|---:|" + "---:|" * len(results)
  rows = [head, rule]
  for g in groups:
    cells = [f"{100 * results[s].get(g, float('nan')):.1f}%" for s in results]
    rows.append(f"| {g} | {counts[g]} | " + " | ".join(cells) + " |")
  return "\n".join(rows)


def run_demo(work_dir: str, model: str | None = None) -> str:
  from stepcoder_jax import metrics as metrics_lib
  from stepcoder_jax.runs import evaluation as eval_run
  from stepcoder_jax.runs import sft as sft_lib
  from stepcoder_jax.runs.trainer import Models

  work = Path(work_dir)
  work.mkdir(parents=True, exist_ok=True)
  ecfg = EvalConfig()
  train_problems = pipeline.load_split("train")
  test_problems = pipeline.load_split(ecfg.split)
  sft_dir = work / "sft"
  results, counts = {}, {}
  with pipeline.open_pool() as pool:
    models = pipeline.load_policy(model)

    def evaluate(stage: str, decoder) -> None:
      rep = eval_run.evaluate(decoder, models.tokenizer, test_problems, ecfg, pool,
                              out_dir=work / "eval", name=stage, progress=True)
      results[stage] = _pass_at_1(rep)
      counts.update({g: int(r["problems"]) for g, r in rep.table.items()})
      _log.info("%s: pass@1 %s", stage, json.dumps(results[stage]))

    evaluate("base", models.policy)
    if (sft_dir / "sft_summary.json").exists():  # an earlier run finished SFT: reuse it
      models = pipeline.load_policy(str(sft_dir))
    else:
      sft_lib.run_sft(models.policy, models.tokenizer, train_problems, SFTConfig(), sft_dir,
                      statements=CCCSConfig().statements)
    evaluate("sft", models.policy)
    tcfg = dataclasses.replace(TrainConfig(), work_dir=str(work / "stepcoder"))
    trainer = pipeline.make_trainer(tcfg, models, train_problems, pool)
    pipeline.run_trainer(trainer)
    evaluate("stepcoder", trainer.policy_model())

  table = comparison_table(results, counts)
  text = (f"# StepCoder demo: pass@1 on the bundled test split\n\n{table}\n\n"
          f"model: {model or ModelSpec().path}; SFT: {sft_dir}; "
          f"training run: {work / 'stepcoder'}\n")
  (work / "report.md").write_text(text)
  (work / "report.json").write_text(json.dumps({"pass@1": results, "problems": counts},
                                               indent=1))
  metrics_lib.plot_pass_at_1_bars(results["sft"], results["stepcoder"], work / "pass_at_1.png",
                                  labels=("SFT (before PPO)", "StepCoder (after)"))
  return text
