"""`stepcoder-jax ablate`: the paper's ablation as a driver of subprocess stages.

Each stage is an existing CLI command (`sft`, `train`, `export`, `eval`) run as a fresh process
(`python -m stepcoder_jax ...`): its memory is freed when it ends, and gin starts from the same
files every time. A stage is done when `<its output dir>/DONE.json` exists (written here after
the command exits 0, with the command line, wall time, exit code and fingerprint: see
runs/ablation_fingerprint.py), so running the ablation again skips every finished stage. An
unfinished `train` or `sft` resumes from its orbax checkpoint by itself, and an unfinished `eval`
from its sampling journal (runs/eval_journal.py). The data stage (writing the problem files) and
the report run in this process; the report runs every time and reads whatever is finished.

Layout under --out:
  data/{train,validation,heldout,rl_pool}.jsonl   the problems (runs/ablation_data.py)
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
                                          sharpening control, runs/ablation_control.py)
  logs/<stage>.log                        each stage's stdout and stderr
  report.md, metrics/<arm>.jsonl, plots/*.png   (runs/ablation_report.py)
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from stepcoder_jax import gin_setup, preemption
from stepcoder_jax.errors import UserError
from stepcoder_jax.runs import (ablation_control, ablation_data, ablation_fingerprint,
                                 ablation_tune)

ARMS = ("ppo", "cccs", "fgo", "stepcoder", "grpo", "grpo_stepcoder")
EVAL_KINDS = ("greedy", "sampled", "probe")
DONE = "DONE.json"


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
  vocab_from: str | None = None   # the model whose tokenizer builds data/vocab (None: no vocab stage)
  tune: tuple = ()                # ablation_tune.TunePoint's: run the tuning plan instead of arms
  tune_arm: str = "stepcoder"     # the arm whose gin every tune point starts from
  controls: tuple[float, ...] = ()  # temperatures of the sharpening control (ablation_control)


@dataclasses.dataclass(frozen=True)
class Stage:
  """One subprocess stage: `stepcoder-jax <argv>`, done when `out/DONE.json` exists."""
  name: str
  out: Path
  argv: tuple[str, ...]
  module: str = "stepcoder_jax"  # run as `python -m <module> <argv>`


def read_done(directory: Path) -> dict | None:
  """The DONE.json of a stage directory, or None while the stage is not finished."""
  f = Path(directory) / DONE
  if not f.is_file():
    return None
  try:
    return json.loads(f.read_text(encoding="utf-8"))
  except json.JSONDecodeError:
    return None  # a torn marker (killed while writing) counts as not done


def write_done(directory: Path, record: dict) -> None:
  directory.mkdir(parents=True, exist_ok=True)
  tmp = directory / (DONE + ".tmp")
  tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
  tmp.replace(directory / DONE)


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
  files = [str(data / f) for f in ("train.jsonl", "validation.jsonl",
                                   ablation_data.HELDOUT_PROMPTS)]
  return Stage("vocab", vocab_file(s).parent,
               (*files, "--model", str(s.vocab_from), "--out", str(vocab_file(s))),
               module="stepcoder_jax.models.vocab_build")


def eval_stages(s: Settings, model: str, path: str | None = None, root: Path | None = None,
                problems: str = "heldout.jsonl", kinds: tuple[str, ...] = EVAL_KINDS,
                prefix: str = "eval", temperature: float | None = None) -> list[Stage]:
  """The greedy evaluation of one model (with the subtask measure: the same process writes
  eval.json and eval_subtask.json), the sampled one (n = eval_n) and the probe of the RL pool,
  into `root/<model>/<kind>` (default evals/). `problems` is the file of the greedy and sampled
  ones (the held-out set; the tuning plan passes the validation set). `temperature` replaces
  gin's eval.temperature in the sampled one (the sharpening control)."""
  path = path if path is not None else model_dir(s, model)
  root = root if root is not None else s.out / "evals"
  base = ("eval",) + (("--model", path) if path else ())
  files = {k: str(s.out / "data" / ("rl_pool.jsonl" if k == "probe" else problems))
           for k in kinds}
  flags = {"greedy": ("--temperature", "0", "--n", "1", "--subtask"),
           "sampled": ("--n", str(s.eval_n))
           + (("--temperature", f"{temperature:g}") if temperature is not None else ()),
           "probe": ("--temperature", "0", "--n", "1")}
  return [Stage(f"{prefix}_{model}_{k}", root / model / k,
                base + ("--problems", files[k], "--out", str(root / model / k))
                + flags[k] + gin_argv(s))
          for k in kinds]


def train_stages(s: Settings, arm: str, name: str, train_dir: Path, model: Path,
                 bindings: tuple[str, ...] = ()) -> list[Stage]:
  """Train from the SFT model on the RL pool (runs/ablation_data.py says why a pool) with the
  arm's gin (+ `bindings`), then export the final policy to `model` as an HF dir."""
  train = Stage(f"train_{name}", train_dir,
                ("train", "--model", str(s.out / "sft"),
                 "--problems", str(s.out / "data" / "rl_pool.jsonl"), "--work_dir", str(train_dir))
                + gin_argv(s, (f"ablations/{arm}.gin",)) + tuple(gin_flag(b) for b in bindings))
  export = Stage(f"export_{name}", model,
                 ("export", "--model", str(train_dir), "--out", str(model)))
  return [train, export]


def arm_stages(s: Settings, arm: str) -> list[Stage]:
  """Train one arm, export its policy, evaluate it."""
  d = s.out / "arms" / arm
  return [*train_stages(s, arm, arm, d / "train", d / "model"), *eval_stages(s, arm)]


def tune_plan(s: Settings) -> list[Stage]:
  """`--tune`: SFT and each tune point (runs/ablation_tune.py) trained and evaluated on the
  validation problems and the RL pool; no held-out evaluation and no other arm."""
  root = ablation_tune.evals_dir(s.out)
  stages = [*eval_stages(s, "sft", root=root, problems="validation.jsonl",
                         kinds=ablation_tune.KINDS, prefix="tune_eval")]
  for p in s.tune:
    model = ablation_tune.model_dir(s.out, s.tune_arm, p)
    name = f"tune_{p.name}" if p.bindings else s.tune_arm
    stages += train_stages(s, s.tune_arm, name, ablation_tune.train_dir(s.out, s.tune_arm, p),
                           model, p.bindings)
    stages += eval_stages(s, p.name, path=str(model), root=root, problems="validation.jsonl",
                          kinds=ablation_tune.KINDS, prefix="tune_eval")
  return stages


def plan(s: Settings) -> list[Stage]:
  """Every subprocess stage in order: SFT, base and SFT evals, then each arm."""
  data = s.out / "data"
  sft = Stage("sft", s.out / "sft",
              ("sft",) + (("--model", s.model) if s.model else ())
              + ("--problems", str(data / "train.jsonl"),
                 "--val_problems", str(data / "validation.jsonl"), "--out", str(s.out / "sft"))
              + gin_argv(s))
  stages = [vocab_stage(s)] if s.vocab_from is not None else []
  if s.tune:
    return stages + [sft, *tune_plan(s)]
  stages += [sft, *eval_stages(s, "base"), *eval_stages(s, "sft")]
  for t in s.controls:  # SFT sampled at lower temperatures (runs/ablation_control.py)
    stages += eval_stages(s, ablation_control.name(t), path=model_dir(s, "sft"),
                          kinds=("sampled",), temperature=t)
  for arm in s.arms:
    stages += arm_stages(s, arm)
  return stages


def check_settings(s: Settings) -> None:
  """Flag errors before anything runs."""
  unknown = []
  for arm in s.arms:
    try:
      gin_setup.resolve_gin_file(f"ablations/{arm}.gin")
    except gin_setup.GinError:
      unknown.append(arm)
  if unknown:
    raise UserError(f"--arms: no configs/ablations/<arm>.gin for {', '.join(unknown)}; "
                    f"choose from {', '.join(ARMS)}")
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
    raise UserError("ablate: gin eval.temperature must be > 0 (it is the sampled evaluation's; "
                    "the greedy one passes --temperature 0)")
  errors = ablation_control.check(s.controls, EvalConfig().temperature)
  if errors:
    raise UserError(f"--control_temperatures: {'; '.join(errors)}")
  if s.mbpp is not None:
    ablation_data.mbpp_file(s.mbpp)


def data_stage(s: Settings, echo: Callable[[str], None]) -> None:
  """Write the problem files once (in this process: cheap, no model)."""
  d = s.out / "data"
  settings = ablation_data.settings_of(s.mbpp, s.heldout_mbpp)
  done = read_done(d)
  if done is not None:
    ablation_data.check_resume(done, settings, d)
    echo(f"[data] done earlier: {done['counts']}")
    return
  t0 = time.time()
  counts = ablation_data.write(d, ablation_data.build(s.mbpp, s.heldout_mbpp))
  write_done(d, {"command": "ablate (data stage, in process)", "settings": settings,
                 "counts": counts, "wall_s": round(time.time() - t0, 3), "exit_code": 0})
  echo(f"[data] wrote {counts} in {time.time() - t0:.1f} s")


def run_stage(stage: Stage, log_dir: Path, fingerprint: str | None = None) -> tuple[int, float]:
  """Run one stage's command, its output appended to logs/<name>.log; (exit code, seconds).
  DONE.json records `fingerprint` (runs/ablation_fingerprint.py) when given."""
  cmd = [sys.executable, "-m", stage.module, *stage.argv]
  log_dir.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  with open(log_dir / f"{stage.name}.log", "a", encoding="utf-8") as log:
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shlex.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
      rc = proc.wait()
    except KeyboardInterrupt:
      # Ctrl-C reached the stage too (same process group), and a train or sft stage saves
      # before it exits: wait for that (a second Ctrl-C kills it), then stop.
      try:
        proc.wait()
      finally:
        if proc.poll() is None:
          proc.kill()
          proc.wait()
      raise
  wall = time.time() - t0
  # A train or sft stage stopped by a signal also exits 0, leaving STOPPED.json: not done.
  if rc == 0 and preemption.read_marker(stage.out) is None:
    record = {"command": shlex.join(cmd), "wall_s": round(wall, 3), "exit_code": 0,
              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    if fingerprint is not None:
      record.update(ablation_fingerprint.record(fingerprint))
    write_done(stage.out, record)
  return rc, wall


def _tail(path: Path, lines: int = 5) -> str:
  try:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
  except OSError:
    return ""


def run_ablation(s: Settings, echo: Callable[[str], None] = print,
                 report_only: bool = False) -> int:
  """Run every stage not done yet, then the report; 0, or 1 when a stage failed.
  `report_only`: write the report from what has finished (e.g. after a kill) and run nothing."""
  from stepcoder_jax.runs import ablation_report

  check_settings(s)
  stages = plan(s)
  if report_only:
    if read_done(s.out / "data") is None:
      raise UserError(f"ablate --report_only: {s.out} holds no ablation (no data/DONE.json)")
    echo(f"[report] {ablation_report.write_report(s, stages)}")
    return 0
  # Before anything runs: no finished stage may be kept from other settings.
  ablation_fingerprint.check(stages, s.out, read_done, write_done)
  fingerprints = ablation_fingerprint.fingerprints(stages, s.out)
  s.out.mkdir(parents=True, exist_ok=True)
  data_stage(s, echo)
  ablation_tune.record(s.tune, s.out, s.tune_arm)
  failed = None
  t_all = time.time()
  for i, stage in enumerate(stages, 1):
    head = f"[{i}/{len(stages)}] {stage.name}"
    if read_done(stage.out) is not None:
      echo(f"{head}: done earlier, skipped")
      continue
    echo(f"{head}: running (log: {s.out / 'logs' / (stage.name + '.log')})")
    rc, wall = run_stage(stage, s.out / "logs", fingerprints[stage.name])
    if rc != 0:
      echo(f"{head}: FAILED with exit code {rc} after {wall:.1f} s; last lines of its log:\n"
           + _tail(s.out / "logs" / f"{stage.name}.log"))
      failed = stage
      break
    if read_done(stage.out) is None:
      echo(f"{head}: stopped by a signal after {wall:.1f} s, its state saved; run the same "
           "command again to resume")
      return 0
    echo(f"{head}: done in {wall:.1f} s (total {time.time() - t_all:.1f} s)")
  report = ablation_report.write_report(s, stages)
  echo(f"[report] {report}")
  if failed is not None:
    echo(f"stopped at {failed.name}; fix the cause and run the same command again to resume")
    return 1
  return 0
