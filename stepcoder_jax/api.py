"""The Python API: the CLI's main steps as functions.

`import stepcoder_jax as scj; scj.train(...)`.

Each function takes what its command takes, plus `gin_files` and `gin` (bindings, as strings
"ppo.kl_coef = 0.05" or a dict {"ppo.kl_coef": 0.05}), which replace the process's gin
configuration for the call, as one command line would. Bad input raises
`stepcoder_jax.errors.UserError` with the message the CLI prints. `train` and `judge` take a
`reward` plug-in (see `execution/config.py:RewardConfig.fn`). Documented in docs/api.md.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from stepcoder_jax import gin_setup
from stepcoder_jax.errors import UserError

Bindings = Sequence[str] | Mapping[str, Any]
RewardFn = Callable[..., float]


@dataclasses.dataclass
class TrainResult:
  """What `train` returns: the per-iteration metrics and where the final policy is."""

  history: list[dict]
  work_dir: Path
  model_dir: Path | None  # an HF directory (None on a multi-host run: export the checkpoint)


def configure(gin_files: Sequence[str] = (), gin: Bindings = ()) -> None:
  """Replace the gin configuration: files (paths, or names under the shipped configs/) and
  bindings, parsed like `--gin_file` and `--gin.NAME=VALUE`."""
  if isinstance(gin, Mapping):
    bindings = [f"{k} = {v!r}" for k, v in gin.items()]
  else:
    bindings = list(gin)
  try:
    gin_setup.parse([os.fspath(f) for f in gin_files], bindings)
  except gin_setup.GinError as e:
    raise UserError(str(e)) from None


def load_problems(problems) -> list:
  """A problems file (any format `--problems` reads), or a list of Problem records or dicts."""
  from stepcoder_jax.data.load import load_problem_file
  from stepcoder_jax.data.record import Problem

  if isinstance(problems, (str, os.PathLike)):
    return load_problem_file(os.fspath(problems))
  return [
    p if isinstance(p, Problem) else Problem.from_dict(dict(p), where=f"problem {i}: ")
    for i, p in enumerate(problems)
  ]


def _problems_file(problems, directory: Path) -> str:
  """A path the commands can read: the file given, or the records written as JSONL."""
  if isinstance(problems, (str, os.PathLike)):
    return os.fspath(problems)
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / "problems.jsonl"
  path.write_text("".join(p.to_json() + "\n" for p in load_problems(problems)), encoding="utf-8")
  return str(path)


def _command(name: str, argv: list[str], gin_files: Sequence[str], gin: Bindings) -> int:
  """Run CLI command `name` in this process with `argv` (its own flags) under the given gin."""
  from stepcoder_jax import cli

  mod = importlib.import_module(f"stepcoder_jax.commands.{cli.COMMANDS[name]}")
  gin_files = list(gin_files) or list(getattr(mod, "DEFAULT_GIN_FILES", ()))
  configure(gin_files, gin)
  parser = cli.build_parser({name: mod})
  try:
    args = parser.parse_args([name, *argv])
  except cli.UsageError as e:
    raise UserError(str(e)) from None
  args.gin_files, args.gin_bindings = gin_files, list(gin)
  return int(mod.run(args) or 0)


def sft(
  model: str | None,
  problems,
  out: str | os.PathLike,
  *,
  steps: int | None = None,
  val_problems=None,
  gin_files: Sequence[str] = (),
  gin: Bindings = (),
) -> Path:
  """Fine-tune `model` on the reference solutions of `problems`; returns the HF directory `out`."""
  out = Path(out)
  argv = ["--out", str(out), "--problems", _problems_file(problems, out / "data")]
  argv += ["--model", str(model)] if model else []
  argv += ["--steps", str(steps)] if steps is not None else []
  if val_problems is not None:
    argv += ["--val_problems", _problems_file(val_problems, out / "data" / "val")]
  _command("sft", argv, gin_files, gin)
  return out


def train(
  model: str | None,
  problems,
  work_dir: str | os.PathLike,
  *,
  iterations: int | None = None,
  reward: RewardFn | None = None,
  gin_files: Sequence[str] = (),
  gin: Bindings = (),
) -> TrainResult:
  """StepCoder (or whichever arm the gin selects) from `model` on `problems`; resumes when
  `work_dir` has a checkpoint. `reward(problem, completion, result) -> float` replaces the CodeRL
  reward (FGO's mask is unchanged)."""
  from stepcoder_jax.execution import ExecutionPool
  from stepcoder_jax.execution.config import ExecutionConfig, RewardConfig
  from stepcoder_jax.rl.config import TrainConfig
  from stepcoder_jax.runs import final_policy, pipeline

  configure(gin_files, gin)
  cfg = dataclasses.replace(TrainConfig(), work_dir=os.fspath(work_dir))
  if iterations is not None:
    cfg = dataclasses.replace(cfg, num_iterations=iterations)
  records = load_problems(problems)
  if not records:
    raise UserError("train: no problems to train on")
  source = (
    os.fspath(problems) if isinstance(problems, (str, os.PathLike)) else "problems given in Python"
  ) + f" ({len(records)} problems)"
  reward_cfg = RewardConfig()
  if reward is not None:
    reward_cfg = dataclasses.replace(reward_cfg, fn=reward)
  with ExecutionPool(ExecutionConfig(), reward_cfg) as pool:
    history = pipeline.train(cfg, model=model, problems=records, pool=pool, data_source=source)
  model_dir = final_policy.final_model_dir(cfg.work_dir)
  return TrainResult(
    history=history,
    work_dir=Path(cfg.work_dir),
    model_dir=model_dir if (model_dir / "config.json").is_file() else None,
  )


def evaluate(
  model: str | None,
  problems,
  out: str | os.PathLike | None = None,
  *,
  n: int | None = None,
  k: Sequence[int] | None = None,
  temperature: float | None = None,
  subtask: bool = False,
  gin_files: Sequence[str] = (),
  gin: Bindings = (),
):
  """pass@k, greedy pass@1 and tests share by difficulty; returns the `EvalReport` (its
  `.table` is what eval.json holds) and writes the tables to `out` when given."""
  from stepcoder_jax.execution.config import ExecutionConfig
  from stepcoder_jax.rl.config import CCCSConfig
  from stepcoder_jax.runs import evaluation, pipeline
  from stepcoder_jax.runs.config import EvalConfig

  configure(gin_files, gin)
  flags = {"num_samples": n, "ks": tuple(k) if k is not None else None, "temperature": temperature}
  cfg = dataclasses.replace(EvalConfig(), **{a: v for a, v in flags.items() if v is not None})
  records = load_problems(problems)
  models = pipeline.load_policy(model)
  with pipeline.open_pool(ExecutionConfig()) as pool:
    return evaluation.evaluate(
      models.policy,
      models.tokenizer,
      records,
      cfg,
      pool,
      out_dir=out,
      name="eval_subtask" if subtask else "eval",
      subtask=subtask,
      statements=CCCSConfig().statements,
    )


def judge(
  problems,
  completions: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
  *,
  reward: RewardFn | None = None,
  gin_files: Sequence[str] = (),
  gin: Bindings = (),
) -> list:
  """Run completions (problem id -> code; or (id, code) pairs, several per id allowed) against
  the problems' tests in the sandbox; without completions, the reference solutions. Returns one
  `ExecResult` per completion, in order."""
  from stepcoder_jax.commands.judge import canonical_job, default_prefix
  from stepcoder_jax.execution import ExecutionPool, Job
  from stepcoder_jax.execution.config import ExecutionConfig, RewardConfig

  configure(gin_files, gin)
  by_id = {p.id: p for p in load_problems(problems)}
  if completions is None:
    jobs = [canonical_job(p) for p in by_id.values() if p.canonical_solution.strip()]
  else:
    pairs = completions.items() if isinstance(completions, Mapping) else completions
    jobs = []
    for pid, code in pairs:
      if pid not in by_id:
        raise UserError(f"judge: completion for {pid!r}, which is not among the problems")
      jobs.append(Job(by_id[pid], code, prefix=default_prefix(by_id[pid])))
  reward_cfg = RewardConfig()
  if reward is not None:
    reward_cfg = dataclasses.replace(reward_cfg, fn=reward)
  with ExecutionPool(ExecutionConfig(), reward_cfg) as pool:
    return pool.run(jobs)


def export(
  model: str,
  out: str | os.PathLike,
  *,
  results: Sequence[str] = (),
  dtype: str | None = None,
  base_model: str | None = None,
  data: str | None = None,
  push_to_hub: str | None = None,
) -> Path:
  """Write `model` as an HF directory with a model card; returns `out`."""
  argv = ["--model", str(model), "--out", os.fspath(out)]
  for r in results:
    argv += ["--results", os.fspath(r)]
  for flag, value in (
    ("--dtype", dtype),
    ("--base_model", base_model),
    ("--data", data),
    ("--push_to_hub", push_to_hub),
  ):
    argv += [flag, value] if value else []
  _command("export", argv, (), ())
  return Path(out)


__all__ = [
  "TrainResult",
  "configure",
  "load_problems",
  "sft",
  "train",
  "evaluate",
  "judge",
  "export",
]
