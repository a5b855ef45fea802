"""The embedded default run (see commands/demo.py): base -> SFT -> StepCoder, measured before/after.

Every stage (base, SFT, StepCoder) is evaluated greedily on the test split twice: the whole
problems (greedy pass@1 and the share of unit tests passed) and the completion subtask from the
last CCCS start point. The evaluations use the ablation's file layout, so the ablation's report
code reads them (ablation/measures.py) and the intervals are computed the same way: a paired
bootstrap over problems (stepcoder_jax/stats.py).

Layout of the work directory:
  eval/<stage>/greedy/    eval.json, eval_subtask.json (+ .md, samples) and DONE.json, written
                          when both evaluations of the stage finished; a rerun reuses them
  sft/                    the SFT model (HF directory); a finished one is reused
  stepcoder/              the training run (metrics, checkpoints, training_curves.png); it
                          resumes from its last checkpoint
  stepcoder/model/        the final StepCoder policy as an HF directory (what `eval --model` and
                          `export --model` take)
  report.md, report.json, pass_at_1.png
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from stepcoder_jax import stats
from stepcoder_jax.ablation import measures, stages
from stepcoder_jax.models import model_card
from stepcoder_jax.models.config import ModelSpec
from stepcoder_jax.rl.config import CCCSConfig, TrainConfig
from stepcoder_jax.runs import final_policy, pipeline
from stepcoder_jax.runs.config import EvalConfig, SFTConfig

_log = logging.getLogger(__name__)
STAGES = ("base", "sft", "stepcoder")
LABELS = {"base": "base", "sft": "SFT", "stepcoder": "StepCoder"}
# The ablation's greedy measures (ablation/measures.MEASURES); all from evals/<stage>/greedy/.
MEASURES = ("greedy pass@1", "tests share", "subtask pass rate")
DIFFS = (("sft", "base"), ("stepcoder", "sft"))  # (stage, the stage before it)
EVAL_KIND = "greedy"
ABLATION_RESULTS = "docs/results/ablation/"  # where the repository keeps the measured ablation


def budget_line() -> str:
  """The run's training budget from the configs in effect, and where longer runs are measured:
  the demo is sized for 30 minutes on 2 cores, which is too short to show an improvement."""
  sft, train = SFTConfig(), TrainConfig()
  rollouts = train.num_iterations * train.problems_per_iteration * train.samples_per_problem
  return (
    f"budget: SFT {sft.steps} steps of {sft.batch_size} examples; StepCoder "
    f"{train.num_iterations} PPO iterations x {train.problems_per_iteration} problems x "
    f"{train.samples_per_problem} samples = {rollouts} rollouts. A smoke-sized run of the "
    f"pipeline, not a measurement of what StepCoder gains: longer runs (the paper's "
    f"ablation, `stepcoder-jax ablate`) are measured in {ABLATION_RESULTS}"
  )


def eval_dir(work: Path, stage: str) -> Path:
  return work / "eval" / stage / EVAL_KIND


def final_model_dir(work: Path) -> Path:
  return work / "stepcoder" / "model"


def stage_values(work: Path) -> dict[str, dict]:
  """stage -> measure -> {problem_id: (value, difficulty)}, from the finished evaluations; a
  measure without any problem (e.g. no subtask among the problems evaluated) is left out."""
  out = {}
  for stage in STAGES:
    values = measures.measure_values(work / "eval", stage)
    out[stage] = {m: values[m] for m in MEASURES if values.get(m)}
  return out


def comparison_table(per_model: dict[str, dict]) -> str:
  """Markdown: one row per stage (mean [95% CI] in %), then one per paired difference of a stage
  and the stage before it (percentage points, '*' when the interval excludes 0)."""
  counts = {m: max((len(v[m]) for v in per_model.values() if m in v), default=0) for m in MEASURES}
  lines = [
    "| | " + " | ".join(f"{m} (n = {counts[m]})" for m in MEASURES) + " |",
    "|---|" + "---:|" * len(MEASURES),
  ]
  for stage, values in per_model.items():
    cells = [
      stats.mean_ci([v for v, _ in values[m].values()]).text(100, 1) if m in values else "n/a"
      for m in MEASURES
    ]
    lines.append(f"| {LABELS.get(stage, stage)} | " + " | ".join(cells) + " |")
  for stage, before in DIFFS:
    cells = [measures.diff_cell(measures.paired(m, per_model, stage, before)) for m in MEASURES]
    lines.append(f"| {LABELS[stage]} - {LABELS[before]} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def diff_sentences(per_model: dict[str, dict]) -> list[str]:
  """One generated line per paired difference: which intervals exclude 0 and which do not."""
  out = []
  for stage, before in DIFFS:
    parts = measures.evidence([(m, measures.paired(m, per_model, stage, before)) for m in MEASURES])
    name = f"{LABELS[stage]} - {LABELS[before]}"
    out.append(f"- **{name}**: " + (measures.clauses(parts) if parts else "no paired evaluation."))
  return out


def rl_verdict(per_model: dict[str, dict]) -> str:
  """One plain line on the RL stage: each measure whose StepCoder - SFT interval excludes 0,
  raised or lowered, or that none moved."""
  moved = []
  for m in MEASURES:
    d = measures.paired(m, per_model, "stepcoder", "sft")
    if d is not None and d.n and d.excludes_zero:
      way = "raised" if d.value > 0 else "lowered"
      moved.append(f"{way} {m} by {d.text(100, 1, signed=True)} points")
  if not moved:
    return (
      "RL (StepCoder - SFT): no measure moved; every paired 95% interval includes 0 at this "
      "many problems."
    )
  return "RL (StepCoder - SFT): " + "; ".join(moved) + " (paired 95% intervals excluding 0)."


def pass_at_1_by_difficulty(per_model: dict[str, dict]) -> tuple[dict, dict]:
  """({stage: {difficulty: greedy pass@1}}, {difficulty: problems}), 'all' included."""
  results, counts = {}, {}
  for stage, values in per_model.items():
    vals = values.get(MEASURES[0], {})
    groups = measures.by_difficulty(vals) if vals else {}
    results[stage] = {g: sum(vals[p][0] for p in ids) / len(ids) for g, ids in groups.items()}
    counts.update({g: len(ids) for g, ids in groups.items()})
  return results, counts


def write_report(work: Path, model: str | None, sft_dir: Path) -> tuple[str, list[Path]]:
  """report.md, report.json and pass_at_1.png from the finished evaluations; (the comparison
  table, the plots)."""
  from stepcoder_jax.ablation import plots as ablation_plots

  per_model = stage_values(work)
  table = comparison_table(per_model)
  labelled = {LABELS[s]: v for s, v in per_model.items()}
  plots = [
    p
    for p in (
      ablation_plots.plot_heldout(labelled, work / "pass_at_1.png", "test split: before and after"),
      work / "stepcoder" / "training_curves.png",
    )
    if p and p.is_file()
  ]
  final = final_model_dir(work)
  text = [
    "# StepCoder demo: the bundled test split before and after",
    "",
    "Greedy decoding. Per stage: mean over problems with a 95% percentile bootstrap interval "
    f"({stats.RESAMPLES} resamples over problems, seed {stats.SEED}), in %; differences are "
    "paired (the same resampled problems for both stages), in percentage points, '*' when the "
    "interval excludes 0. The subtask completes each problem from its last CCCS start point "
    "(problems without one are left out).",
    "",
    table,
    "",
    "## What the numbers show",
    "",
    *diff_sentences(per_model),
    "",
    "## Budget",
    "",
    budget_line() + ".",
    "",
  ]
  for m in MEASURES:
    text += [f"## {m} by difficulty", "", measures.model_table(m, per_model), ""]
  text += [
    "## Plots",
    "",
    # Relative links: the figures show wherever the run directory is opened or copied.
    *[f"![{p.stem.replace('_', ' ')}]({p.relative_to(work).as_posix()})\n" for p in plots],
    "## Files",
    "",
    f"- base model: {model or ModelSpec().path}",
    f"- SFT model: `{sft_dir}`",
    f"- final StepCoder model (HF directory): `{final}`",
    f"- training run: `{work / 'stepcoder'}`",
    *[f"- plot: `{p}`" for p in plots],
    "",
  ]
  (work / "report.md").write_text("\n".join(text), encoding="utf-8")
  results, counts = pass_at_1_by_difficulty(per_model)
  estimates = {
    s: {m: dataclasses.asdict(stats.mean_ci([v for v, _ in vals[m].values()])) for m in vals}
    for s, vals in per_model.items()
  }
  diffs = {
    f"{s}-{b}": {
      m: dataclasses.asdict(d)
      for m in MEASURES
      if (d := measures.paired(m, per_model, s, b)) is not None
    }
    for s, b in DIFFS
  }
  (work / "report.json").write_text(
    json.dumps(
      {
        "pass@1": results,
        "problems": counts,
        "measures": estimates,
        "differences": diffs,
        "final_model": str(final),
        "plots": [str(p) for p in plots],
      },
      indent=1,
    ),
    encoding="utf-8",
  )
  return table, plots


def run_demo(work_dir: str, model: str | None = None) -> str:
  """Run (or resume) the demo; returns what the command prints: the table and the paths."""
  from stepcoder_jax.runs import evaluation as eval_run
  from stepcoder_jax.runs import sft as sft_lib

  work = Path(work_dir)
  work.mkdir(parents=True, exist_ok=True)
  # The demo's measures are greedy whatever gin says about sampling.
  ecfg = dataclasses.replace(EvalConfig(), temperature=0.0, num_samples=1, ks=(1,))
  statements = CCCSConfig().statements
  train_problems = pipeline.load_split("train")
  test_problems = pipeline.load_split(ecfg.split)
  sft_dir = work / "sft"
  final = final_model_dir(work)

  def done(stage: str) -> bool:
    return stages.read_done(eval_dir(work, stage)) is not None

  def evaluate(stage: str, decoder, tokenizer) -> None:
    out = eval_dir(work, stage)
    if done(stage):  # an earlier run finished this evaluation: reuse it
      _log.info("%s: evaluation done earlier, reused (%s)", stage, out)
      return
    t0 = time.time()
    rep = eval_run.evaluate(
      decoder, tokenizer, test_problems, ecfg, pool, out_dir=out, name="eval", progress=True
    )
    eval_run.evaluate(
      decoder,
      tokenizer,
      test_problems,
      ecfg,
      pool,
      out_dir=out,
      name="eval_subtask",
      progress=True,
      subtask=True,
      statements=statements,
    )
    stages.write_done(out, {"stage": stage, "wall_s": time.time() - t0})
    _log.info("%s: greedy pass@1 %s", stage, rep.greedy_pass_at_1())

  with pipeline.open_pool() as pool:
    sft_finished = sft_lib.finished_summary(sft_dir) is not None
    if not (done("base") and sft_finished):
      models = pipeline.load_policy(model)
      evaluate("base", models.policy, models.tokenizer)
    if sft_finished:  # an earlier run finished SFT: reuse it
      models = pipeline.load_policy(str(sft_dir))
    else:
      sft_lib.run_sft(
        models.policy, models.tokenizer, train_problems, SFTConfig(), sft_dir, statements=statements
      )
      sft_lib.write_provenance(
        sft_dir, model, "stepcoder_builtin split train", len(train_problems), SFTConfig()
      )
    evaluate("sft", models.policy, models.tokenizer)
    if not (done("stepcoder") and (final / "config.json").is_file()):
      tcfg = dataclasses.replace(TrainConfig(), work_dir=str(work / "stepcoder"))
      trainer = pipeline.make_trainer(tcfg, models, train_problems, pool)
      pipeline.run_trainer(trainer)  # resumes from the last checkpoint
      policy = trainer.policy_model()
      sft_lib.save(policy, models.tokenizer, final)
      model_card.write_provenance(
        final,
        **final_policy.provenance(
          trainer, str(sft_dir), f"stepcoder_builtin split train ({len(train_problems)} problems)"
        ),
      )
      evaluate("stepcoder", policy, models.tokenizer)

  table, plots = write_report(work, model, sft_dir)
  return "\n".join(
    [
      table,
      "",
      rl_verdict(stage_values(work)),
      budget_line(),
      f"report: {work / 'report.md'}",
      *[f"plot: {p}" for p in plots],
      f"final model (HF directory): {final}",
      "",
    ]
  )
