"""`stepcoder-jax ablate` (stepcoder_jax/ablation/): the whole ablation on tiny-llama, its resume,
its data splits and its report on partial results."""

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stepcoder_jax import cli
from stepcoder_jax.errors import UserError
from stepcoder_jax.ablation import control as ablation_control
from stepcoder_jax.ablation import data as ablation_data
from stepcoder_jax.ablation import fingerprint as ablation_fingerprint
from stepcoder_jax.ablation import measures as ablation_measures
from stepcoder_jax.ablation import plan as ablation_plan
from stepcoder_jax.ablation import plots as ablation_plots
from stepcoder_jax.ablation import report as ablation_report
from stepcoder_jax.ablation import run as ablation_run
from stepcoder_jax.ablation import tune as ablation_tune
from stepcoder_jax.ablation.stages import read_done, write_done

REPO = Path(__file__).resolve().parent.parent
ARMS = ("ppo", "grpo_stepcoder")  # together they switch cccs, fgo and the advantage estimator


def _mbpp_row(task_id: int, name: str, body: str, tests: list[str]) -> dict:
  return {
    "task_id": task_id,
    "text": f"Write a function {name}.",
    "code": body,
    "test_list": tests,
    "test_setup_code": "",
    "challenge_test_list": [],
  }


def write_fake_mbpp(directory: Path) -> Path:
  """An mbpp.jsonl with two test, one validation and two train problems (MBPP's id ranges)."""
  rows = [
    _mbpp_row(11, "add", "def add(a, b):\n  return a + b", ["assert add(1, 2) == 3"]),
    _mbpp_row(12, "neg", "def neg(a):\n  return -a", ["assert neg(2) == -2"]),
    _mbpp_row(511, "dbl", "def dbl(a):\n  return 2 * a", ["assert dbl(2) == 4"]),
    _mbpp_row(
      601,
      "sq",
      "def sq(a):\n  if a < 0:\n    return a * a\n  return a * a",
      ["assert sq(3) == 9", "assert sq(-2) == 4"],
    ),
    _mbpp_row(602, "inc", "def inc(a):\n  return a + 1", ["assert inc(1) == 2"]),
  ]
  directory.mkdir(parents=True, exist_ok=True)
  path = directory / "mbpp.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


def _ids(path: Path) -> list[str]:
  return [json.loads(l)["id"] for l in path.read_text().splitlines() if l.strip()]


# ------------------------------------------------------------------ data stage (fast)


def test_data_splits_with_mbpp(tmp_path):
  mbpp = write_fake_mbpp(tmp_path / "mbpp")
  splits = ablation_data.build(str(mbpp.parent), heldout_mbpp=1)
  bundled = ablation_data.builtin_splits()
  ids = {k: [p.id for p in v] for k, v in splits.items()}
  assert ids["validation"] == ["mbpp/511"]
  assert ids["train"] == [p.id for p in bundled["train"]] + ["mbpp/601", "mbpp/602"]
  # Only the first MBPP test problem (by task id) is held out, after the bundled test split.
  assert ids["heldout"] == [p.id for p in bundled["test"]] + ["mbpp/11"]
  assert not set(ids["train"]) & set(ids["heldout"])


def test_data_splits_without_mbpp_hold_back_a_tenth_of_train():
  splits = ablation_data.build(None, heldout_mbpp=100)
  train = ablation_data.builtin_splits()["train"]
  val = {p.id for p in splits["validation"]}
  assert len(val) == -(-len(train) // 10)  # every 10th of the sorted ids: ceil(10%)
  assert not val & {p.id for p in splits["train"]}
  assert len(splits["train"]) + len(val) == len(train)


def test_missing_mbpp_is_one_line_naming_the_flag(tmp_path, capsys):
  rc = cli.main(
    [
      "ablate",
      "--out",
      str(tmp_path / "a"),
      "--mbpp",
      str(tmp_path / "nope"),
      "--gin_file",
      "experiments/ablation_tiny.gin",
    ]
  )
  err = capsys.readouterr().err.strip()
  assert rc == 2
  assert err.startswith("error: --mbpp ") and "\n" not in err
  assert not (tmp_path / "a" / "data").exists()


def test_unknown_arm_is_refused(tmp_path, capsys):
  rc = cli.main(
    [
      "ablate",
      "--out",
      str(tmp_path / "a"),
      "--arms",
      "ppo",
      "magic",
      "--gin_file",
      "experiments/ablation_tiny.gin",
    ]
  )
  err = capsys.readouterr().err
  assert rc == 2
  assert err.startswith("error: --arms") and "magic" in err


def test_resume_with_other_data_flags_is_refused(tmp_path):
  d = tmp_path / "data"
  write_done(d, {"settings": ablation_data.settings_of(None, 100), "counts": {}})
  mbpp = write_fake_mbpp(tmp_path / "mbpp")
  with pytest.raises(UserError, match="--mbpp/--heldout_mbpp"):
    ablation_data.check_resume(read_done(d), ablation_data.settings_of(str(mbpp), 5), d)


def test_rl_pool_and_heldout_prompts_are_written(tmp_path):
  mbpp = write_fake_mbpp(tmp_path / "mbpp")
  splits = ablation_data.build(str(mbpp.parent), heldout_mbpp=1)
  assert [p.id for p in splits["rl_pool"]] == [
    p.id for p in splits["train"][:: ablation_data.RL_POOL_EVERY]
  ]
  ablation_data.write(tmp_path / "data", splits)
  prompts = [
    json.loads(l)
    for l in (tmp_path / "data" / ablation_data.HELDOUT_PROMPTS).read_text().splitlines()
  ]
  # The vocabulary source holds the held-out problems without their solutions.
  assert [r["id"] for r in prompts] == [p.id for p in splits["heldout"]]
  assert all(r["canonical_solution"] == "" for r in prompts)
  assert any(p.canonical_solution for p in splits["heldout"])


def test_output_vocab_stage_runs_first_and_every_later_stage_uses_its_file(tmp_path):
  s = ablation_plan.Settings(out=tmp_path, arms=("ppo",), vocab_from="gemma3-270m")
  stages = ablation_plan.plan(s)
  first, rest = stages[0], stages[1:]
  assert first.name == "vocab" and first.module == "stepcoder_jax.models.vocab_build"
  assert str(tmp_path / "data" / ablation_data.HELDOUT_PROMPTS) in first.argv
  assert not any(a.endswith("heldout.jsonl") for a in first.argv)  # no held-out solutions
  binding = f"--gin.model.output_vocab='{ablation_plan.vocab_file(s)}'"
  assert all(binding in st.argv for st in rest if st.argv[0] != "export")
  # The arms train on the RL pool, and the probe evaluates exactly that file.
  probe = next(st for st in stages if st.name == "eval_ppo_probe")
  train = next(st for st in stages if st.name == "train_ppo")
  pool = str(tmp_path / "data" / "rl_pool.jsonl")
  assert pool in probe.argv and pool in train.argv
  assert str(tmp_path / "data" / "train.jsonl") not in train.argv
  # Without a restricted vocabulary in the gin there is no vocab stage and no binding.
  plain = ablation_plan.plan(ablation_plan.Settings(out=tmp_path, arms=("ppo",)))
  assert plain[0].name == "sft"
  assert not any(a.startswith("--gin.model.output_vocab") for st in plain for a in st.argv)


def test_vocab_build_keeps_the_ids_of_the_given_problem_files(tmp_path):
  """The vocab stage's command on a tiny tokenizer: the ids of a problem file's texts are in,
  with EOS; the file loads as an output vocabulary of that model."""
  from tests.tiny_hf import make_tiny_llama
  from stepcoder_jax.models import output_vocab, vocab_build

  _, tok = make_tiny_llama(tmp_path / "m")
  probs = tmp_path / "p.jsonl"
  probs.write_text(
    json.dumps({"question": "zq", "canonical_solution": "def zq(): return 7"}) + "\n"
  )
  out = tmp_path / "v.npz"
  assert (
    vocab_build.main([str(probs), "--model", str(tmp_path / "m"), "--out", str(out), "--no_stdlib"])
    == 0
  )
  ids = set(output_vocab.load(str(out), len(tok)))
  text_ids = set(tok("def zq(): return 7", add_special_tokens=False)["input_ids"])
  assert text_ids <= ids and tok.eos_token_id in ids
  assert len(ids) < len(tok)


def test_report_only_writes_a_report_of_what_finished_and_runs_nothing(tmp_path, capsys):
  out = tmp_path / "a"
  argv = [
    "ablate",
    "--out",
    str(out),
    "--arms",
    "ppo",
    "--report_only",
    "--gin_file",
    "experiments/ablation_tiny.gin",
  ]
  assert cli.main(argv) == 2  # nothing there yet: one line, no directory made
  assert "no data/DONE.json" in capsys.readouterr().err and not out.exists()
  ablation_data.write(out / "data", ablation_data.build(None, 100))
  write_done(out / "data", {"settings": ablation_data.settings_of(None, 100)})
  assert cli.main(argv) == 0
  report = (out / "report.md").read_text()
  assert "| ppo | not run yet | 0 | 0 |" in report
  assert not (out / "logs").exists() and not (out / "sft").exists()  # no stage ran


def test_report_sft_section_shows_the_validation_curve_and_the_kept_step(tmp_path):
  d = tmp_path / "sft"
  d.mkdir()
  assert ablation_report.sft_section(tmp_path) == ["_SFT not started yet._"]
  rows = [
    {"step": 0, "sft/val_nll": 1.5},
    {"step": 1, "sft/loss": 2.0},
    {"step": 2, "sft/loss": 1.0, "sft/val_nll": 1.25},
  ]
  (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  text = "\n".join(ablation_report.sft_section(tmp_path))
  assert "in progress (step 2 logged" in text and "| 2 | 1.2500 |" in text
  (d / "sft_summary.json").write_text(
    json.dumps({"finished": True, "steps_run": 2, "stop_reason": "max_steps", "best_step": 2})
  )
  text = "\n".join(ablation_report.sft_section(tmp_path))
  assert "finished after 2 steps (max_steps); the model kept is step 2" in text


def test_report_sft_section_puts_the_trials_set_aside_beside_the_kept_curve(tmp_path):
  (tmp_path / "sft").mkdir()
  (tmp_path / "sft" / "metrics.jsonl").write_text(
    "".join(
      json.dumps(r) + "\n"
      for r in [{"step": 0, "sft/val_nll": 1.0}, {"step": 30, "sft/val_nll": 0.9}]
    )
  )
  trial = tmp_path / "sft_trials" / "lr3e-5"
  trial.mkdir(parents=True)
  (trial / "metrics.jsonl").write_text(
    "".join(
      json.dumps(r) + "\n"
      for r in [
        {"step": 0, "sft/val_nll": 1.0},
        {"step": 30, "sft/val_nll": 1.1},
        {"step": 60, "sft/val_nll": 1.05},
      ]
    )
  )
  (trial / "TRIAL.json").write_text(json.dumps({"setting": "lr 3e-5", "why": "NLL rose"}))
  text = "\n".join(ablation_report.sft_section(tmp_path))
  assert "Set aside on validation: lr 3e-5 (NLL rose)." in text
  assert "| step | validation NLL | lr 3e-5 |" in text
  assert "| 30 | 0.9000 | 1.1000 |" in text and "| 60 | | 1.0500 |" in text


def _finish_all(stages, out):
  """Mark every stage done with its current fingerprint, as a finished run would."""
  fps = ablation_fingerprint.fingerprints(stages, out)
  for st in stages:
    write_done(st.out, ablation_fingerprint.record(fps[st.name]))


def _stale_names(s):
  stages = ablation_plan.plan(s)
  bad = set(ablation_fingerprint.stale(stages, s.out, read_done, write_done))
  return {st.name for st in stages if Path(st.out) / "DONE.json" in bad}


def test_a_stage_finished_with_other_gin_settings_stops_the_run_before_anything_runs(
  tmp_path, monkeypatch
):
  monkeypatch.setattr(ablation_plan, "check_settings", lambda s: None)  # gin is not parsed here
  inc, top = tmp_path / "inc.gin", tmp_path / "top.gin"
  inc.write_text("sft.learning_rate = 1e-5\n")
  top.write_text(f"include '{inc}'\nsft.steps = 3  # a comment\n")
  s = ablation_plan.Settings(out=tmp_path / "run", arms=("ppo",), gin_files=(str(top),))
  _finish_all(ablation_plan.plan(s), s.out)
  top.write_text(f"# edited comments only\ninclude '{inc}'\nsft.steps = 3\n")
  assert _stale_names(s) == set()  # comments are not settings
  inc.write_text("sft.learning_rate = 3e-5\n")  # a setting in an included file, read by SFT
  # SFT changed, so did everything that reads its model (the vocabulary stage does not).
  assert _stale_names(s) == {st.name for st in ablation_plan.plan(s)} - {"vocab"}
  with pytest.raises(
    UserError,
    match=r"finished stage\(s\) ran with other settings.*"
    r"sft/DONE.json .*arms/ppo/train/DONE.json",
  ):
    ablation_run.run_ablation(s, echo=lambda _: None)
  assert not (s.out / "data").exists()  # stopped before the data stage


def test_an_rl_setting_invalidates_the_arms_training_and_what_reads_it_not_sft(tmp_path):
  top = tmp_path / "top.gin"
  top.write_text("ppo.kl_coef = 0.05\ncccs.rho = 0.5\nsft.steps = 3\n")
  s = ablation_plan.Settings(out=tmp_path / "run", arms=("ppo", "cccs"), gin_files=(str(top),))
  _finish_all(ablation_plan.plan(s), s.out)
  top.write_text("ppo.kl_coef = 0.01\ncccs.rho = 0.5\nsft.steps = 3\n")
  expected = (
    {f"train_{a}" for a in ("ppo", "cccs")}
    | {f"export_{a}" for a in ("ppo", "cccs")}
    | {f"eval_{a}_{k}" for a in ("ppo", "cccs") for k in ablation_plan.EVAL_KINDS}
  )
  assert _stale_names(s) == expected  # SFT and the base and SFT evaluations are kept
  # cccs.statements is read outside training too: SFT's examples and the subtask start there.
  top.write_text("ppo.kl_coef = 0.05\ncccs.rho = 0.5\nsft.steps = 3\ncccs.statements = 2\n")
  assert "sft" in _stale_names(s) and "eval_base_greedy" in _stale_names(s)


def test_only_the_settings_in_effect_count(tmp_path):
  # An included file's value overridden later, or a binding moved, changes nothing gin runs with.
  inc, top = tmp_path / "inc.gin", tmp_path / "top.gin"
  inc.write_text("sft.steps = 3\nsft.learning_rate = 3e-5\n")
  top.write_text(f"include '{inc}'\nsft.learning_rate = 1e-5\n")
  s = ablation_plan.Settings(out=tmp_path / "run", arms=("ppo",), gin_files=(str(top),))
  _finish_all(ablation_plan.plan(s), s.out)
  inc.write_text("sft.learning_rate = 5e-5\nsft.steps = 3\n")  # overridden, and reordered
  assert _stale_names(s) == set()
  top.write_text(f"include '{inc}'\nsft.learning_rate = 2e-5\n")  # the value in effect
  assert "sft" in _stale_names(s)
  top.write_text(f"include '{inc}'\nsft.learning_rate = 1e-5\n")
  flagged = ablation_plan.Settings(
    out=s.out, arms=("ppo",), gin_files=(str(top),), gin_bindings=("sft.learning_rate = 1e-5",)
  )  # same value by flag
  assert _stale_names(flagged) == set()


def test_version_1_markers_are_checked_the_old_way_and_upgraded(tmp_path):
  top = tmp_path / "top.gin"
  top.write_text("ppo.kl_coef = 0.05\nsft.steps = 3\n")
  s = ablation_plan.Settings(out=tmp_path / "run", arms=("ppo",), gin_files=(str(top),))
  stages = ablation_plan.plan(s)
  sft = next(st for st in stages if st.name == "sft")
  base = next(st for st in stages if st.name == "eval_base_greedy")
  write_done(sft.out, {"command": "x", "fingerprint": ablation_fingerprint.legacy(sft, s.out)})
  write_done(base.out, {"command": "x", "fingerprint": "0123456789abcdef"})
  write_done(Path(stages[-1].out), {"command": "a marker from before fingerprints"})
  assert _stale_names(s) == {"eval_base_greedy"}
  upgraded = read_done(sft.out)
  assert upgraded["fingerprint_version"] == ablation_fingerprint.FINGERPRINT_VERSION
  assert upgraded["command"] == "x"
  assert upgraded["fingerprint"] == ablation_fingerprint.fingerprints(stages, s.out)["sft"]
  top.write_text("ppo.kl_coef = 0.01\nsft.steps = 3\n")  # after the upgrade: judged per stage
  assert "sft" not in _stale_names(s)


def test_a_version_1_marker_downstream_of_a_stale_stage_is_stale(tmp_path):
  # Version 1 did not chain stages: export (no gin of its own) matched the old way even after its
  # training changed. It must not be upgraded then, or a retrained arm would keep the old export.
  top = tmp_path / "top.gin"
  top.write_text("ppo.kl_coef = 0.05\n")
  s = ablation_plan.Settings(out=tmp_path / "run", arms=("ppo",), gin_files=(str(top),))
  stages = {st.name: st for st in ablation_plan.plan(s)}
  for name in ("train_ppo", "export_ppo"):
    write_done(stages[name].out, {"fingerprint": ablation_fingerprint.legacy(stages[name], s.out)})
  top.write_text("ppo.kl_coef = 0.01\n")
  assert _stale_names(s) == {"train_ppo", "export_ppo"}


# ------------------------------------------------------------------ tuning on validation (fast)


@pytest.mark.parametrize(
  "spec",
  [
    "lr",
    "=ppo.policy_lr=1e-5",
    "evals=ppo.policy_lr=1e-5",
    "a b=ppo.policy_lr=1e-5",
    "lr=policy_lr",
  ],
)
def test_bad_tune_spec_is_one_line_naming_the_flag(spec):
  with pytest.raises(UserError, match="--tune"):
    ablation_tune.parse(spec)


def test_tune_plan_trains_the_arm_with_the_bindings_and_evaluates_on_validation(tmp_path):
  points = (
    ablation_tune.parse("lr=ppo.policy_lr=1e-5; ppo.kl_coef=0.1"),
    ablation_tune.parse("default="),
  )
  assert points[0].bindings == ("ppo.policy_lr=1e-5", "ppo.kl_coef=0.1") and not points[1].bindings
  s = ablation_plan.Settings(out=tmp_path, arms=("ppo",), tune=points, tune_arm="stepcoder")
  stages = {st.name: st for st in ablation_plan.plan(s)}
  train = stages["train_tune_lr"]
  assert train.out == tmp_path / "tune" / "lr" / "train"
  assert "--gin.ppo.policy_lr=1e-5" in train.argv and "--gin.ppo.kl_coef=0.1" in train.argv
  assert str(tmp_path / "data" / "rl_pool.jsonl") in train.argv
  assert any(a.endswith("ablations/stepcoder.gin") for a in train.argv)
  # The point without bindings is the arm itself: its training is the arm's own stage.
  arm = ablation_plan.arm_stages(s, "stepcoder")[0]
  assert stages["train_stepcoder"] == arm
  val = str(tmp_path / "data" / "validation.jsonl")
  for model in ("sft", "lr", "default"):
    greedy = stages[f"tune_eval_{model}_greedy"]
    assert val in greedy.argv and "--subtask" in greedy.argv
    assert greedy.out == tmp_path / "tune" / "evals" / model / "greedy"
    assert str(tmp_path / "data" / "rl_pool.jsonl") in stages[f"tune_eval_{model}_probe"].argv
  assert stages["tune_eval_default_greedy"].argv[2] == str(
    tmp_path / "arms" / "stepcoder" / "model"
  )
  # No held-out evaluation, no other arm.
  assert not any("heldout.jsonl" in a for st in stages.values() for a in st.argv)
  assert "train_ppo" not in stages


def test_tune_names_are_unique_and_never_reused_with_other_bindings(tmp_path):
  lr = ablation_tune.parse("lr=ppo.policy_lr=1e-5")
  with pytest.raises(UserError, match="given twice"):
    ablation_tune.check((lr, lr), tmp_path)
  ablation_tune.record((lr,), tmp_path, "stepcoder")
  ablation_tune.check((lr,), tmp_path)  # the same bindings again: fine
  with pytest.raises(UserError, match="--tune lr: .* was run with"):
    ablation_tune.check((ablation_tune.parse("lr=ppo.policy_lr=3e-5"),), tmp_path)


def _fake_eval(d: Path, passed: list[bool], subtask: list[bool] | None = None) -> None:
  d.mkdir(parents=True, exist_ok=True)
  rows = [
    {"problem_id": f"p{i}", "difficulty": "x", "greedy_passed": p, "tests_share": float(p)}
    for i, p in enumerate(passed)
  ]
  (d / "eval.json").write_text(json.dumps({"problems": rows}))
  if subtask is not None:
    (d / "eval_subtask.json").write_text(
      json.dumps(
        {"problems": [{"problem_id": f"p{i}", "subtask_passed": p} for i, p in enumerate(subtask)]}
      )
    )
  (d / "DONE.json").write_text("{}")


def _fake_sampled(d: Path, passes: list[int], n: int = 4) -> None:
  d.mkdir(parents=True, exist_ok=True)
  rows = [{"problem_id": f"p{i}", "difficulty": "x", "c": c, "n": n} for i, c in enumerate(passes)]
  (d / "eval.json").write_text(json.dumps({"problems": rows}))
  (d / "DONE.json").write_text("{}")


def test_control_temperatures_sample_sft_before_the_arms(tmp_path):
  s = ablation_plan.Settings(out=tmp_path, arms=("ppo",), controls=(0.4,))
  names = [st.name for st in ablation_plan.plan(s)]
  stage = next(st for st in ablation_plan.plan(s) if st.name == "eval_sft_t0.4_sampled")
  assert names.index("eval_sft_t0.4_sampled") < names.index("train_ppo")
  assert stage.out == tmp_path / "evals" / "sft_t0.4" / "sampled"
  argv = list(stage.argv)
  assert argv[argv.index("--model") + 1] == str(tmp_path / "sft")
  assert argv[argv.index("--temperature") + 1] == "0.4"
  assert argv[argv.index("--n") + 1] == "4"
  assert argv[argv.index("--problems") + 1].endswith("heldout.jsonl")
  plain = [
    st.name for st in ablation_plan.plan(ablation_plan.Settings(out=tmp_path, arms=("ppo",)))
  ]
  assert not [n for n in plain if "sft_t" in n]
  # The other sampled evaluations keep gin's temperature: no --temperature flag.
  assert (
    "--temperature"
    not in next(st for st in ablation_plan.plan(s) if st.name == "eval_sft_sampled").argv
  )


def test_control_temperatures_must_be_new_and_positive(tmp_path, capsys):
  assert ablation_control.check((0.4, 0.6), 0.8) == []
  assert len(ablation_control.check((0.0, 0.8, 0.4, 0.4), 0.8)) == 3
  rc = cli.main(
    [
      "ablate",
      "--out",
      str(tmp_path / "a"),
      "--control_temperatures",
      "0",
      "--gin_file",
      "experiments/ablation_tiny.gin",
    ]
  )
  err = capsys.readouterr().err.strip()
  assert rc == 2 and "\n" not in err
  assert err.startswith("error: --control_temperatures: 0 is not > 0")


def test_sharpening_section_sets_each_arm_against_sft_at_every_temperature(tmp_path):
  ev = tmp_path / "evals"
  assert ablation_control.section(ev, (), 0.8, ["ppo"]) == []  # not asked for: no section
  _fake_eval(ev / "sft" / "greedy", [False] * 10)
  _fake_sampled(ev / "sft" / "sampled", [0] * 10)  # T = 0.8: 0%
  _fake_sampled(ev / "sft_t0.4" / "sampled", [4] * 5 + [0] * 5)  # T = 0.4: 50%
  _fake_sampled(ev / "ppo" / "sampled", [2] * 10)  # the arm at 0.8: 50%
  text = "\n".join(ablation_control.section(ev, (0.4, 0.6), 0.8, ["ppo", "cccs"]))
  assert "| T | SFT pass@1 | ppo minus SFT |" in text  # cccs has no sampled eval: no column
  assert "| 0 | 0.0 [0.0, 0.0] | +50.0 [+50.0, +50.0] * |" in text
  assert "| 0.8 | 0.0 [0.0, 0.0] | +50.0 [+50.0, +50.0] * |" in text
  row = next(l for l in text.splitlines() if l.startswith("| 0.4 |"))
  assert row.startswith("| 0.4 | 50.0 [") and "+0.0 [" in row and "*" not in row
  assert "Not evaluated yet: T = 0.6." in text
  assert "- **ppo**: not ahead of SFT (interval includes 0) at T = 0.4:" in text
  png = ablation_plots.plot_sharpening(ev, (0.4,), 0.8, ["ppo"], tmp_path / "sharpening.png")
  assert png is not None and png.stat().st_size > 1000
  # Ahead at every temperature once SFT at 0.4 passes nothing either.
  _fake_sampled(ev / "sft_t0.4" / "sampled", [0] * 10)
  text = "\n".join(ablation_control.section(ev, (0.4,), 0.8, ["ppo"]))
  assert "- **ppo**: ahead of SFT at every temperature evaluated (0, 0.4, 0.8)." in text
  _fake_sampled(ev / "ppo" / "sampled", [0] * 10)  # no better than SFT at its own temperature
  text = "\n".join(ablation_control.section(ev, (0.4,), 0.8, ["ppo"]))
  assert "- **ppo**: not ahead of SFT even at its own temperature 0.8 (nor at T = 0, 0.4)." in text


def test_every_figure_draws_each_model_in_its_one_colour(tmp_path):
  """heldout, training curves and sharpening control: an arm has the same colour in all three
  (ablation_plots.colour), and no two models share one."""
  from matplotlib.colors import to_rgba

  ev = tmp_path / "evals"
  for model in ("base", "sft", "stepcoder", "fgo"):
    _fake_eval(ev / model / "greedy", [True, False, False])
    _fake_sampled(ev / model / "sampled", [1, 0, 2])
  _fake_sampled(ev / "sft_t0.4" / "sampled", [0, 0, 1])
  for arm in ("stepcoder", "fgo"):
    (tmp_path / "metrics").mkdir(exist_ok=True)
    (tmp_path / "metrics" / f"{arm}.jsonl").write_text(
      "\n".join(json.dumps({"step": i, "reward_mean": i / 8}) for i in range(1, 9))
    )
  arms = ["stepcoder", "fgo"]  # not in the default colour cycle's order
  per_model = {m: ablation_measures.measure_values(ev, m) for m in ("base", "sft", *arms)}

  heldout = ablation_plots.heldout_figure(per_model, "t", (0.8, 4)).axes[0]
  drawn = [
    {t.get_text(): p.get_facecolor() for t, p in zip(heldout.get_xticklabels(), heldout.patches)}
  ]
  training = ablation_plots.training_figure(tmp_path, arms)
  lines = training.axes[0].lines  # per arm: its raw values, then their moving average
  assert [to_rgba(line.get_color()) for line in lines] == [
    to_rgba(ablation_plots.colour(a)) for a in arms for _ in (0, 1)
  ]
  for fig in (training, ablation_plots.sharpening_figure(ev, (0.4,), 0.8, arms)):
    legend = fig.legends[0] if fig.legends else fig.axes[0].get_legend()
    drawn.append(
      {
        t.get_text().split(",")[0].replace("SFT", "sft"): to_rgba(h.get_color())
        for t, h in zip(legend.get_texts(), legend.legend_handles)
        if not t.get_text().startswith(("raw", "moving"))
      }
    )
  want = {m: to_rgba(ablation_plots.colour(m)) for m in ("base", "sft", *arms)}
  assert len(set(want.values())) == len(want)
  assert drawn[0] == want
  assert drawn[1] == {a: want[a] for a in arms}
  assert drawn[2] == {m: want[m] for m in ("sft", *arms)}


def test_tune_section_shows_each_point_beside_sft_with_paired_differences(tmp_path):
  measures = [m for m, *_ in ablation_measures.MEASURES]
  assert ablation_tune.section(tmp_path, measures) == []  # nothing tuned: no section
  ablation_tune.record(
    (ablation_tune.parse("lr=ppo.policy_lr=1e-5"), ablation_tune.parse("default=")),
    tmp_path,
    "stepcoder",
  )
  ev = ablation_tune.evals_dir(tmp_path)
  _fake_eval(ev / "sft" / "greedy", [False] * 10, [False] * 10)
  _fake_eval(ev / "lr" / "greedy", [True] * 10, [True] * 5 + [False] * 5)
  text = "\n".join(ablation_tune.section(tmp_path, measures))
  assert "| sft | the SFT model | 0.0 [0.0, 0.0] | 0.0 [0.0, 0.0] | 0.0 [0.0, 0.0] |" in text
  assert "| lr | `ppo.policy_lr=1e-5` | 100.0 [100.0, 100.0]; +100.0 [+100.0, +100.0] *" in text
  assert "| default | the arm as is | n/a | n/a | n/a |" in text
  assert "pass@1 (n samples)" not in text  # no sampled evaluation in tuning
  # The training table: a point's log, its last iterations averaged (a diverged run shows here).
  assert "| lr | 0 | no | n/a | n/a | n/a | n/a |" in text
  train = ablation_tune.train_dir(
    tmp_path, "stepcoder", ablation_tune.parse("lr=ppo.policy_lr=1e-5")
  )
  train.mkdir(parents=True)
  rows = [
    {
      "step": i,
      "pass_rate": 0.5 if i == 1 else 0.0,
      "ppo/ref_kl": float(i),
      "truncated_rate": 1.0 if i > 5 else 0.0,
      "outcome/compile_error": 0.5,
    }
    for i in range(1, 11)
  ]
  (train / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  text = "\n".join(ablation_tune.section(tmp_path, measures))
  assert "| lr | 10 | no | 5.0% | 8.0 | 100% | 50% |" in text


# ------------------------------------------------------------------ the whole command (slow)


def _ablate(out: Path, mbpp: Path) -> tuple[str, float]:
  cmd = [
    sys.executable,
    "-m",
    "stepcoder_jax",
    "ablate",
    "--out",
    str(out),
    "--model",
    "tiny-llama",
    "--mbpp",
    str(mbpp),
    "--heldout_mbpp",
    "1",
    "--eval_n",
    "2",
    "--arms",
    *ARMS,
    "--gin_file",
    "experiments/ablation_tiny.gin",
  ]
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc.stdout, time.time() - t0


def _done_mtimes(out: Path) -> dict[str, float]:
  return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("DONE.json")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """One full tiny ablation: (out dir, fake MBPP file, stdout, wall seconds)."""
  tmp = tmp_path_factory.mktemp("ablate")
  mbpp = write_fake_mbpp(tmp / "mbpp")
  out = tmp / "run"
  stdout, wall = _ablate(out, mbpp)
  return out, mbpp, stdout, wall


@pytest.mark.slow
def test_ablation_writes_report_metrics_and_plots(finished):
  out, _, stdout, _ = finished
  stages = ablation_plan.plan(ablation_plan.Settings(out=out, arms=ARMS))
  assert len(re.findall(r"\] \S+: done in ", stdout)) == len(stages)
  assert all(read_done(st.out)["exit_code"] == 0 for st in stages)
  assert json.loads((out / "data" / "DONE.json").read_text())["counts"]["heldout"] == 33
  for arm in ARMS:
    metrics = [json.loads(l) for l in (out / "metrics" / f"{arm}.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert (out / "arms" / arm / "model" / "config.json").is_file()  # the exported HF dir
  for png in ("heldout.png", "training_curves.png"):
    assert (out / "plots" / png).stat().st_size > 1000
  report = (out / "report.md").read_text()
  assert "Stages not finished: none." in report
  for model in ("base", "sft", *ARMS):
    assert re.search(rf"^\| {model} \| \d+\.\d \[", report, re.M), model
  # The paired-difference row of every arm, and a generated sentence for each.
  assert re.search(r"^\| grpo_stepcoder \| [+-]\d+\.\d \[", report, re.M)
  for arm in ARMS:
    line = next(l for l in report.splitlines() if l.startswith(f"- **{arm}**"))
    assert re.search(r"Intervals (include|exclude) 0", line), line
  assert "| ppo | done | 2 | 8 |" in report  # 2 iterations x 2 problems x 2 samples
  assert "tiny-llama" in report and "git commit:" in report and "cores:" in report


@pytest.mark.slow
def test_arms_differ_only_in_cccs_fgo_and_advantage(finished):
  out = finished[0]

  def bindings(arm):
    text = (out / "arms" / arm / "train" / "operative_config.gin").read_text()
    return {
      l.split("=", 1)[0].strip(): l.split("=", 1)[1].strip()
      for l in text.splitlines()
      if "=" in l and not l.lstrip().startswith("#")
    }

  a, b = bindings(ARMS[0]), bindings(ARMS[1])
  assert len(a) > 20  # a real operative config, not an empty file
  differ = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
  # grpo_stepcoder binds the KL-in-the-reward it was published with (issue 28 made the loss the
  # critic-free default), so ppo.kl_in_loss is set there and left at its default in ppo.
  assert differ == {"cccs.enabled", "fgo.enabled", "ppo.advantage", "ppo.kl_in_loss"}


@pytest.mark.slow
def test_second_run_skips_every_stage_and_a_deleted_marker_reruns_only_its_stage(finished):
  out, mbpp, _, _ = finished
  before = _done_mtimes(out)
  stdout, _ = _ablate(out, mbpp)
  assert "running" not in stdout
  assert stdout.count("done earlier, skipped") == len(before) - 1  # every stage but data
  assert _done_mtimes(out) == before  # skipped: no stage wrote its marker again (no timing check)

  (out / "evals" / "ppo" / "sampled" / "DONE.json").unlink()
  stdout, _ = _ablate(out, mbpp)
  assert re.findall(r"\] (\S+): running", stdout) == ["eval_ppo_sampled"]
  after = _done_mtimes(out)
  changed = {k for k in before if after.get(k) != before[k]}
  assert changed == {str(Path("evals/ppo/sampled/DONE.json"))}


@pytest.mark.slow
def test_report_lists_arms_not_run_yet(finished, tmp_path):
  out = tmp_path / "copy"
  shutil.copytree(finished[0], out)
  s = ablation_plan.Settings(out=out, arms=("ppo", "fgo"))
  report = ablation_report.write_report(s, ablation_plan.plan(s)).read_text()
  assert "| fgo | not run yet | 0 | 0 |" in report
  assert "train_fgo" in report.split("Stages not finished:")[1].splitlines()[0]
  assert "- **fgo**: no finished held-out evaluation or training log yet." in report


@pytest.mark.slow
def test_tune_runs_on_validation_and_reuses_the_arms_own_training(finished, tmp_path):
  out = tmp_path / "copy"
  shutil.copytree(finished[0], out)
  cmd = [
    sys.executable,
    "-m",
    "stepcoder_jax",
    "ablate",
    "--out",
    str(out),
    "--model",
    "tiny-llama",
    "--mbpp",
    str(finished[1]),
    "--heldout_mbpp",
    "1",
    "--arms",
    *ARMS,
    "--gin_file",
    "experiments/ablation_tiny.gin",
    "--tune",
    "lr=ppo.policy_lr=1e-4",
    "--tune",
    "default=",
    "--tune_arm",
    "ppo",
  ]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  ran = re.findall(r"\] (\S+): running", proc.stdout)
  assert "train_ppo" not in ran and "train_tune_lr" in ran  # the arm's own run is reused
  assert not any(r.startswith("eval_") for r in ran)  # nothing on the held-out set
  text = (out / "tune" / "lr" / "train" / "operative_config.gin").read_text()
  assert re.search(r"^ppo\.policy_lr = 0\.0001$", text, re.M)
  report = (out / "report.md").read_text()
  section = report.split("## Tuning on validation")[1].split("\n## ")[0]
  for row in (
    "| sft | the SFT model | ",
    "| lr | `ppo.policy_lr=1e-4` | ",
    "| default | the arm as is | ",
  ):
    assert re.search(re.escape(row) + r"\d+\.\d \[", section), row


def test_problems_without_a_difficulty_are_grouped_by_their_dataset(tmp_path):
  d = tmp_path / "evals" / "sft" / "greedy"
  d.mkdir(parents=True)
  (d / "eval.json").write_text(
    json.dumps(
      {
        "problems": [
          {"problem_id": "mbpp/11", "difficulty": None, "greedy_passed": True, "tests_share": 1.0},
          {
            "problem_id": "mbpp/12",
            "difficulty": "unknown",
            "greedy_passed": True,
            "tests_share": 1.0,
          },
          {
            "problem_id": "builtin/call/0005",
            "difficulty": "introductory",
            "greedy_passed": False,
            "tests_share": 0.0,
          },
        ]
      }
    )
  )
  (d / "DONE.json").write_text("{}")
  values = ablation_measures.measure_values(tmp_path / "evals", "sft")["greedy pass@1"]
  assert values == {
    "mbpp/11": (1.0, "mbpp"),
    "mbpp/12": (1.0, "mbpp"),
    "builtin/call/0005": (0.0, "introductory"),
  }


def test_report_shows_sft_minus_base_paired(tmp_path):
  per_model = {"base": {}, "sft": {}}
  assert ablation_report.sft_vs_base(per_model) == []  # nothing evaluated yet: no table
  per_model = {
    m: {"tests share": {f"p{i}": (v, "x") for i in range(8)}}
    for m, v in (("base", 0.0), ("sft", 0.5))
  }
  text = "\n".join(ablation_report.sft_vs_base(per_model))
  assert "+50.0 [+50.0, +50.0] *" in text and "n/a" in text  # other measures not evaluated


def test_evidence_names_each_measures_own_problem_count():
  # The subtask and RL-pool measures cover fewer problems than the held-out set: each clause
  # must carry its own count, and only an interval off 0 counts as evidence.
  from stepcoder_jax.stats import Estimate

  parts = ablation_measures.evidence(
    [
      ("tests share vs sft", Estimate(0.05, 0.01, 0.09, 132, up=9, down=2)),
      ("RL-pool pass@1 vs sft", Estimate(0.03, -0.03, 0.09, 32, up=2, down=1)),
      ("missing", None),
    ]
  )
  assert parts[0] == (
    "intervals exclude 0 for tests share vs sft +5.0 [+1.0, +9.0] pp (132 problems: 9 up, 2 down)"
  )
  assert parts[1].endswith("RL-pool pass@1 vs sft +3.0 [-3.0, +9.0] pp (32 problems: 2 up, 1 down)")
  assert len(parts) == 2


def test_training_trend_reports_pass_rate_and_entropy_by_thirds(tmp_path):
  # A sampled pass@1 gain can come from a sharper policy alone: the sentence must carry the
  # entropy next to the pass rate, each as the mean of the first and the last third.
  (tmp_path / "metrics").mkdir()
  rows = [
    {"step": i + 1, "pass_rate": [0.0, 0.1, 0.3][i // 2], "ppo/entropy": [0.8, 0.7, 0.5][i // 2]}
    for i in range(6)
  ]
  (tmp_path / "metrics" / "arm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  assert ablation_report._training_trend(tmp_path, "arm") == (
    "its rollout pass rate (at the current curriculum stage) went from 0.00 over the first 2 "
    "iterations to 0.30 over the last 2, its per-token entropy from 0.80 to 0.50"
  )
  assert ablation_report._training_trend(tmp_path, "other") is None  # no log yet


def test_critic_free_arms_are_also_compared_with_plain_grpo():
  # grpo_stepcoder - grpo is what CCCS + FGO add without a value model: the report must show it
  # (paired, with the '*' rule), and nothing when plain GRPO was not run.
  per_model = {
    m: {"tests share": {f"p{i}": (v, "x") for i in range(8)}}
    for m, v in (("sft", 0.1), ("ppo", 0.2), ("grpo", 0.25), ("grpo_stepcoder", 0.5))
  }
  text = "\n".join(
    ablation_report.critic_free_section(["stepcoder", "ppo", "grpo_stepcoder", "grpo"], per_model)
  )
  assert "| grpo_stepcoder |" in text and "| stepcoder |" not in text
  assert "tests share vs grpo" in text and "+25.0 [+25.0, +25.0] *" in text
  assert ablation_report.critic_free_section(["stepcoder", "grpo_stepcoder"], per_model) == []
