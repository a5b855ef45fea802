"""`stepcoder-jax ablate`'s plan: the paper's ablation as an ordered list of subprocess stages.

Every stage (ablation/stages.py) is a CLI command run as its own process, done when its output
directory holds DONE.json; the plan is a pure function of the settings (flags and gin), so a rerun
plans the same stages and skips those done. The driver (ablation/run.py) runs them and the report.

Layout under --out:
  data/{train,validation,heldout,rl_pool}.jsonl   the problems (ablation/data.py)
  data/vocab/output_vocab.npz             when gin sets model.output_vocab: the ids of this run's
                                          problems (held-out solutions left out) + the stdlib, used
                                          by every later stage instead of the gin's
                                          (models/vocab_build.py)
  sft/                                    the SFT model (HF dir), every arm's start and reference
  arms/<arm>/train/                       the training run (checkpoints, metrics.jsonl, gin)
  arms/<arm>/model/                       its final policy as an HF dir (`export`)
  evals/<model>/{greedy,sampled}/        held-out evaluations of base, sft and each arm
  evals/<model>/probe/                    greedy, s* = 0, on data/rl_pool.jsonl (the arms' problems)
  evals/sft_t<T>/sampled/                 SFT sampled at T (--control_temperatures: the
                                          sharpening control, ablation/control.py)
  logs/<stage>.log                        each stage's stdout and stderr
  report.md, metrics/<arm>.jsonl, plots/*.png   (ablation/report.py)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from stepcoder_jax import gin_setup
from stepcoder_jax.ablation import control as ablation_control
from stepcoder_jax.ablation import data as ablation_data
from stepcoder_jax.ablation import tune as ablation_tune
from stepcoder_jax.ablation.stages import Stage
from stepcoder_jax.errors import UserError

ARMS = ("ppo", "cccs", "fgo", "stepcoder", "grpo", "grpo_stepcoder")
EVAL_KINDS = ("greedy", "sampled", "probe")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What one ablation run was asked for (flags and gin), fixed for all its stages."""

  out: Path
  arms: tuple[str, ...] = ARMS
  mbpp: str | None = None
  heldout_mbpp: int = 100
  eval_n: int = 4
  model: str | None = None
  gin_files: tuple[str, ...] = ()
  gin_bindings: tuple[str, ...] = ()
  command_line: str = ""
  vocab_from: str | None = None  # whose tokenizer builds data/vocab (None: no vocab stage)
  tune: tuple = ()  # ablation_tune.TunePoint's: run the tuning plan instead of arms
  tune_arm: str = "stepcoder"  # the arm whose gin every tune point starts from
  controls: tuple[float, ...] = ()  # temperatures of the sharpening control (ablation_control)
  arm_dir: str = "ablations"  # arms are configs/<arm_dir>/<arm>.gin (configs/signal: reward signal)


def model_dir(s: Settings, model: str) -> str | None:
  """The model an evaluation of `model` loads (None: gin's model.path, the base model)."""
  if model == "base":
    return s.model
  if model == "sft":
    return str(s.out / "sft")
  return str(s.out / "arms" / model / "model")


def gin_flag(binding: str) -> str:
  """'NAME.PARAM = VALUE' -> the flag '--gin.NAME.PARAM=VALUE' a stage's command takes."""
  name, value = binding.split("=", 1)
  return f"--gin.{name.strip()}={value.strip()}"


def gin_argv(s: Settings, extra_files: tuple[str, ...] = ()) -> tuple[str, ...]:
  """The ablation's gin files (absolute) and bindings as flags of a stage's command."""
  out: list[str] = []
  for f in (*s.gin_files, *extra_files):
    out += ["--gin_file", str(Path(gin_setup.resolve_gin_file(f)).resolve())]
  out += [gin_flag(b) for b in s.gin_bindings]
  if s.vocab_from is not None:
    out.append(f"--gin.model.output_vocab='{vocab_file(s)}'")
  return tuple(out)


def vocab_file(s: Settings) -> Path:
  return s.out / "data" / "vocab" / "output_vocab.npz"


def vocab_stage(s: Settings) -> Stage:
  """The run's output vocabulary (when gin restricts one): the ids its problems' texts use, train
  and validation whole, held-out without solutions, plus the standard library. The shipped
  gemma3_code set lacks ids of MBPP names (e.g. pieces of `find_Min_Sum`) that a held-out test
  calls, so a policy restricted to it could not write them."""
  data = s.out / "data"
  files = [
    str(data / f) for f in ("train.jsonl", "validation.jsonl", ablation_data.HELDOUT_PROMPTS)
  ]
  return Stage(
    "vocab",
    vocab_file(s).parent,
    (*files, "--model", str(s.vocab_from), "--out", str(vocab_file(s))),
    module="stepcoder_jax.models.vocab_build",
  )


def eval_stages(
  s: Settings,
  model: str,
  path: str | None = None,
  root: Path | None = None,
  problems: str = "heldout.jsonl",
  kinds: tuple[str, ...] = EVAL_KINDS,
  prefix: str = "eval",
  temperature: float | None = None,
) -> list[Stage]:
  """The greedy evaluation of one model (with the subtask measure: the same process writes
  eval.json and eval_subtask.json), the sampled one (n = eval_n) and the probe of the RL pool,
  into `root/<model>/<kind>` (default evals/). `problems` is the file of the greedy and sampled
  ones (the held-out set; the tuning plan passes the validation set). `temperature` replaces
  gin's eval.temperature in the sampled one (the sharpening control)."""
  path = path if path is not None else model_dir(s, model)
  root = root if root is not None else s.out / "evals"
  base = ("eval",) + (("--model", path) if path else ())
  files = {k: str(s.out / "data" / ("rl_pool.jsonl" if k == "probe" else problems)) for k in kinds}
  flags = {
    "greedy": ("--temperature", "0", "--n", "1", "--subtask"),
    "sampled": ("--n", str(s.eval_n))
    + (("--temperature", f"{temperature:g}") if temperature is not None else ()),
    "probe": ("--temperature", "0", "--n", "1")
    # the signal measurement also probes the pool at each problem's latest start point
    + (("--subtask",) if s.arm_dir == "signal" else ()),
  }
  return [
    Stage(
      f"{prefix}_{model}_{k}",
      root / model / k,
      base + ("--problems", files[k], "--out", str(root / model / k)) + flags[k] + gin_argv(s),
    )
    for k in kinds
  ]


def train_stages(
  s: Settings, arm: str, name: str, train_dir: Path, model: Path, bindings: tuple[str, ...] = ()
) -> list[Stage]:
  """Train from the SFT model on the RL pool (ablation/data.py says why a pool) with the
  arm's gin (+ `bindings`), then export the final policy to `model` as an HF dir."""
  train = Stage(
    f"train_{name}",
    train_dir,
    (
      "train",
      "--model",
      str(s.out / "sft"),
      "--problems",
      str(s.out / "data" / "rl_pool.jsonl"),
      "--work_dir",
      str(train_dir),
    )
    + gin_argv(s, (arm_gin(s, arm),))
    + tuple(gin_flag(b) for b in bindings),
  )
  export = Stage(
    f"export_{name}", model, ("export", "--model", str(train_dir), "--out", str(model))
  )
  return [train, export]


def arm_gin(s: Settings, arm: str) -> str:
  """The gin file of `arm`, relative to configs/."""
  return f"{s.arm_dir}/{arm}.gin"


def arm_stages(s: Settings, arm: str) -> list[Stage]:
  """Train one arm, export its policy, evaluate it."""
  d = s.out / "arms" / arm
  return [*train_stages(s, arm, arm, d / "train", d / "model"), *eval_stages(s, arm)]


def tune_plan(s: Settings) -> list[Stage]:
  """`--tune`: SFT and each tune point (ablation/tune.py) trained and evaluated on the
  validation problems and the RL pool; no held-out evaluation and no other arm."""
  root = ablation_tune.evals_dir(s.out)
  stages = [
    *eval_stages(
      s,
      "sft",
      root=root,
      problems="validation.jsonl",
      kinds=ablation_tune.KINDS,
      prefix="tune_eval",
    )
  ]
  for p in s.tune:
    model = ablation_tune.model_dir(s.out, s.tune_arm, p)
    name = f"tune_{p.name}" if p.bindings else s.tune_arm
    stages += train_stages(
      s, s.tune_arm, name, ablation_tune.train_dir(s.out, s.tune_arm, p), model, p.bindings
    )
    stages += eval_stages(
      s,
      p.name,
      path=str(model),
      root=root,
      problems="validation.jsonl",
      kinds=ablation_tune.KINDS,
      prefix="tune_eval",
    )
  return stages


def plan(s: Settings) -> list[Stage]:
  """Every subprocess stage in order: SFT, base and SFT evals, then each arm (the signal
  measurement: `signal_order`)."""
  data = s.out / "data"
  sft = Stage(
    "sft",
    s.out / "sft",
    ("sft",)
    + (("--model", s.model) if s.model else ())
    + (
      "--problems",
      str(data / "train.jsonl"),
      "--val_problems",
      str(data / "validation.jsonl"),
      "--out",
      str(s.out / "sft"),
    )
    + gin_argv(s),
  )
  stages = [vocab_stage(s)] if s.vocab_from is not None else []
  if s.tune:
    return stages + [sft, *tune_plan(s)]
  if s.arm_dir == "signal":
    return stages + [sft, *signal_order(s)]
  stages += [sft, *eval_stages(s, "base"), *eval_stages(s, "sft")]
  for t in s.controls:  # SFT sampled at lower temperatures (ablation/control.py)
    stages += eval_stages(
      s, ablation_control.name(t), path=model_dir(s, "sft"), kinds=("sampled",), temperature=t
    )
  for arm in s.arms:
    stages += arm_stages(s, arm)
  return stages


def signal_order(s: Settings) -> list[Stage]:
  """The signal measurement's stages after SFT, what it is judged on first: the SFT probe of the
  training pool, then per arm training, export and its probe (signal fraction, pass rate,
  curriculum progress and the pool's before/after), and only then the held-out evaluations
  (about half the machine time), so a run cut short by a session still has its main result.
  The stages are the ablation's; only their order differs."""
  kinds = tuple(k for k in EVAL_KINDS if k != "probe")
  first = [*eval_stages(s, "sft", kinds=("probe",))]
  for arm in s.arms:
    d = s.out / "arms" / arm
    first += [
      *train_stages(s, arm, arm, d / "train", d / "model"),
      *eval_stages(s, arm, kinds=("probe",)),
    ]
  last = [*eval_stages(s, "base"), *eval_stages(s, "sft", kinds=kinds)]
  for arm in s.arms:
    last += eval_stages(s, arm, kinds=kinds)
  return first + last


def check_settings(s: Settings) -> None:
  """Flag errors before anything runs."""
  unknown = []
  for arm in s.arms:
    try:
      gin_setup.resolve_gin_file(arm_gin(s, arm))
    except gin_setup.GinError:
      unknown.append(arm)
  if unknown:
    choose = f"choose from {', '.join(ARMS)}" if s.arm_dir == "ablations" else "see the folder"
    raise UserError(f"--arms: no configs/{s.arm_dir}/<arm>.gin for {', '.join(unknown)}; {choose}")
  if len(set(s.arms)) != len(s.arms):
    raise UserError(f"--arms: an arm is named twice in {' '.join(s.arms)}")
  if s.tune:
    if s.tune_arm not in ARMS:
      raise UserError(f"--tune_arm: {s.tune_arm!r} is not an arm; choose from {', '.join(ARMS)}")
    ablation_tune.check(s.tune, s.out)
  if s.eval_n < 1:
    raise UserError(f"--eval_n: must be >= 1, got {s.eval_n}")
  from stepcoder_jax.runs.config import EvalConfig

  if EvalConfig().temperature <= 0:
    raise UserError(
      "ablate: gin eval.temperature must be > 0 (it is the sampled evaluation's; "
      "the greedy one passes --temperature 0)"
    )
  errors = ablation_control.check(s.controls, EvalConfig().temperature)
  if errors:
    raise UserError(f"--control_temperatures: {'; '.join(errors)}")
  if s.mbpp is not None:
    ablation_data.mbpp_file(s.mbpp)
