"""scripts/publish_ablation.sh and scripts/restore_ablation.sh: a run directory published and
restored elsewhere comes back with every finished result, and without the markers of the stages
whose outputs (files, weights) are not published, so `ablate` reruns exactly those. The published
ablation (docs/results/ablation/) gives back its own report."""

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from stepcoder_jax import cli
from stepcoder_jax.ablation import stages

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "docs" / "results" / "ablation"


def _write(path: Path, text: str = "{}") -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")


def _done(d: Path, **extra) -> None:
  _write(d / "DONE.json", json.dumps({"exit_code": 0, **extra}))


def _sh(script: str, *args: Path) -> subprocess.CompletedProcess:
  return subprocess.run(
    ["bash", str(ROOT / "scripts" / script), *map(str, args)],
    capture_output=True,
    text=True,
    check=False,
  )


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
  """A finished-in-part ablation: data, vocab, SFT, base evals, the ppo arm done, cccs killed
  mid-training, one tune point."""
  r = tmp_path / "run"
  _done(r / "data", counts={"train": 3})
  _write(r / "data" / "train.jsonl", "{}\n")
  _done(r / "data" / "vocab")
  _done(r / "sft")
  _write(r / "sft" / "sft_summary.json", '{"steps_run": 2}')
  _write(r / "sft" / "metrics.jsonl", '{"step": 0, "sft/val_nll": 1.0}\n')
  _write(r / "sft" / "model.safetensors", "weights")
  for kind in ("greedy", "sampled"):
    _done(r / "evals" / "base" / kind)
    _write(r / "evals" / "base" / kind / "eval.json", f'{{"kind": "{kind}"}}')
  _write(r / "evals" / "base" / "greedy" / "eval_subtask.json", '{"subtask": 1}')
  _done(r / "arms" / "ppo" / "train")
  _write(r / "arms" / "ppo" / "train" / "metrics.jsonl", '{"iteration": 1}\n{"iteration": 2}\n')
  _done(r / "arms" / "ppo" / "model")
  _write(r / "arms" / "cccs" / "train" / "metrics.jsonl", '{"iteration": 1}\n')
  _write(r / "metrics" / "ppo.jsonl", '{"iteration": 1}\n{"iteration": 2}\n')
  _write(r / "metrics" / "cccs.jsonl", '{"iteration": 1}\n')
  _write(r / "tune" / "lr" / "TUNE.json", '{"bindings": ["ppo.policy_lr = 1e-5"]}')
  _write(r / "tune" / "lr" / "train" / "metrics.jsonl", '{"iteration": 1}\n')
  _done(r / "tune" / "evals" / "sft" / "greedy")
  _write(r / "tune" / "evals" / "sft" / "greedy" / "eval.json", '{"tune": 1}')
  _write(r / "sft_trials" / "lr3e-5" / "TRIAL.json", '{"lr": 3e-5}')
  _write(r / "report.md", "# report\n")
  return r


def test_publish_then_restore_brings_back_results_not_unpublished_stages(run_dir, tmp_path):
  pub, back = tmp_path / "published", tmp_path / "restored"
  assert _sh("publish_ablation.sh", run_dir, pub).returncode == 0
  assert not list(pub.rglob("*.safetensors"))  # weights are never published
  res = _sh("restore_ablation.sh", pub, back)
  assert res.returncode == 0, res.stderr
  # Finished results are back where the report and the stage skipping read them.
  for rel in (
    "evals/base/greedy/DONE.json",
    "evals/base/greedy/eval.json",
    "evals/base/greedy/eval_subtask.json",
    "evals/base/sampled/eval.json",
    "arms/ppo/train/DONE.json",
    "arms/ppo/model/DONE.json",
    "tune/lr/TUNE.json",
    "tune/lr/train/metrics.jsonl",
    "tune/evals/sft/greedy/eval.json",
    "tune/evals/sft/greedy/DONE.json",
    "sft_trials/lr3e-5/TRIAL.json",
  ):
    assert (back / rel).read_bytes() == (run_dir / rel).read_bytes(), rel
  assert (back / "arms/ppo/train/metrics.jsonl").read_text() == (
    run_dir / "arms/ppo/train/metrics.jsonl"
  ).read_text()
  # Stages whose outputs a later stage loads come back unfinished, so they rerun.
  for d in ("data", "data/vocab", "sft"):
    assert stages.read_done(back / d) is None, d
  assert (back / "sft/published_metrics.jsonl").read_text() == (
    run_dir / "sft/metrics.jsonl"
  ).read_text()
  # A killed arm's partial log is not restored: its training restarts from iteration 0.
  assert not (back / "arms/cccs/train").exists()


def test_restore_refuses_an_existing_run_and_an_empty_source(run_dir, tmp_path):
  pub = tmp_path / "published"
  assert _sh("publish_ablation.sh", run_dir, pub).returncode == 0
  res = _sh("restore_ablation.sh", pub, run_dir)
  assert res.returncode != 0 and "already holds an ablation run" in res.stderr
  assert (run_dir / "sft" / "DONE.json").is_file()  # nothing overwritten
  res = _sh("restore_ablation.sh", tmp_path / "nothing", tmp_path / "new")
  assert res.returncode != 0 and "no published ablation" in res.stderr


def _published_argv(report: str, out: Path, mbpp: Path) -> list[str]:
  """The `ablate` command line the published report records, on this checkout: our run
  directory, a stand-in MBPP file, the gin file from this repository's configs/."""
  line = next(l for l in report.splitlines() if l.startswith("- command: `"))
  argv = shlex.split(line[len("- command: `") : -1])[1:]  # ablate ..., without stepcoder-jax
  swap = {"--out": str(out), "--mbpp": str(mbpp)}
  for i, a in enumerate(argv[:-1]):
    if a in swap:
      argv[i + 1] = swap[a]
    elif a == "--gin_file":
      argv[i + 1] = argv[i + 1].split("/configs/", 1)[-1]
  return argv + ["--report_only"]


def test_the_published_ablation_report_regenerates_from_the_published_results(tmp_path):
  """restore + the three markers restore leaves out (data, vocabulary and SFT: their outputs are
  not published, but the report reads their counts, summary and curve), then `ablate
  --report_only` with the published flags: report.md, plots and metrics come back byte for byte,
  except the Run section's lines about the machine, checkout and time."""
  run = tmp_path / "run"
  assert _sh("restore_ablation.sh", PUBLISHED, run).returncode == 0
  for stage in ("data", "data/vocab", "sft"):
    (run / stage).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PUBLISHED / "stages" / stage / "DONE.json", run / stage / "DONE.json")
  for f in (PUBLISHED / "sft").iterdir():
    shutil.copyfile(f, run / "sft" / f.name)
  mbpp = tmp_path / "mbpp.jsonl"
  mbpp.write_text("")  # the report reads only that --mbpp was given (the data stage is done)
  published = (PUBLISHED / "report.md").read_text(encoding="utf-8")
  assert cli.main(_published_argv(published, run, mbpp)) == 0

  mine = (run / "report.md").read_text(encoding="utf-8")
  head, _, tail = mine.partition("\n## Run\n")
  published_head, _, published_tail = published.partition("\n## Run\n")
  assert head == published_head
  keys = [l.split(":", 1)[0] for l in tail.splitlines()]  # command, git commit, uname, ...
  assert keys == [l.split(":", 1)[0] for l in published_tail.splitlines()]
  for d in ("plots", "metrics"):
    files = sorted(p.name for p in (PUBLISHED / d).iterdir())
    assert files == sorted(p.name for p in (run / d).iterdir())
    for name in files:
      assert (run / d / name).read_bytes() == (PUBLISHED / d / name).read_bytes(), f"{d}/{name}"
