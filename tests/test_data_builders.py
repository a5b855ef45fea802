"""TFDS builders: each builds offline (fixtures or ../shared/data) into a tmp data_dir."""

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from stepcoder_jax.data import builders, load
from stepcoder_jax.data.builders import apps_plus, mbpp, stepcoder_builtin
from stepcoder_jax.data.record import Problem
from stepcoder_jax.errors import UserError

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _need(path):
  if not path.exists():
    pytest.skip(f"real data {path} is absent")


def _manual(tmp_path, name, fixture, filename):
  d = tmp_path / "manual" / name
  d.mkdir(parents=True)
  shutil.copy(FIXTURES / fixture, d / filename)
  return str(tmp_path / "manual")


def _valid(ps):
  for p in ps:
    assert isinstance(p, Problem)
    p.validate()
  assert len({p.id for p in ps}) == len(ps)


def test_tensorflow_is_not_installed_nor_imported(tmp_path):
  code = (
    "import sys\n"
    "try:\n  import tensorflow\n  print('TF_PRESENT')\nexcept ImportError:\n  pass\n"
    "from stepcoder_jax.data import load\n"
    f"ps = load.load_problems('apps_plus', 'train', data_dir={str(tmp_path / 'd')!r},"
    f" manual_dir={_manual(tmp_path, 'apps_plus', 'apps_plus_call.json', 'data.json')!r})\n"
    "print(len(ps), 'tensorflow' in sys.modules)\n"
  )
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "TF_PRESENT" not in out.stdout
  assert out.stdout.strip().splitlines()[-1] == "1 False"


def test_apps_plus_call_fixture_splits_by_difficulty(tmp_path):
  manual = _manual(tmp_path, "apps_plus", "apps_plus_call.json", "data.json")
  train = load.load_problems("apps_plus", "train", data_dir=str(tmp_path / "d"), manual_dir=manual)
  test = load.load_problems("apps_plus", "test", data_dir=str(tmp_path / "d"), manual_dir=manual)
  _valid(train + test)
  # First of each level is test: c1 (introductory), c2 (interview); c3 is the 2nd introductory.
  assert [p.id for p in test] == ["apps_plus/c1", "apps_plus/c2"]
  assert [p.id for p in train] == ["apps_plus/c3"]
  assert all(p.test_kind == "call" for p in train + test)


def test_apps_plus_stdio_fixture_and_record_roundtrip(tmp_path):
  manual = _manual(tmp_path, "apps_plus", "apps_plus_stdio.json", "data.json")
  d = str(tmp_path / "d")
  test = load.load_problems("apps_plus", "test", data_dir=d, manual_dir=manual)
  train = load.load_problems("apps_plus", "train", data_dir=d, manual_dir=manual)
  assert [p.id for p in test] == ["apps_plus/10", "apps_plus/11", "apps_plus/13"]
  assert [p.id for p in train] == ["apps_plus/12"]
  direct = {p.id: p for p in load.load_problem_file(str(FIXTURES / "apps_plus_stdio.json"))}
  assert all(direct[p.id] == p for p in train + test)  # TFDS stores the record unchanged


def test_apps_plus_bad_record_fails_build_naming_index_and_keys(tmp_path):
  manual = _manual(tmp_path, "apps_plus", "apps_plus_bad.json", "data.json")
  with pytest.raises(UserError, match=r"record 1: .*\['answer', 'body', 'title'\]"):
    load.load_problems("apps_plus", "train", data_dir=str(tmp_path / "d"), manual_dir=manual)


def test_missing_manual_file_says_what_and_where(tmp_path):
  with pytest.raises(UserError) as e:
    load.load_problems(
      "apps_plus", "train", data_dir=str(tmp_path / "d"), manual_dir=str(tmp_path / "empty")
    )
  msg = str(e.value)
  assert "data.json" in msg and "Ablustrund/APPS_Plus" in msg
  assert str(tmp_path / "empty" / "apps_plus") in msg


def test_split_by_difficulty_rule():
  ps = [
    Problem(
      id=f"x/{i}",
      question="q",
      test_kind="stdio",
      inputs=["1"],
      outputs=["1"],
      difficulty=("introductory" if i % 3 else "competition"),
    )
    for i in range(40)
  ]
  out = apps_plus.split_by_difficulty(ps)
  counts = Counter(p.difficulty for p in out["test"])
  # 26 introductory -> ceil(26/10) = 3 test; 14 competition -> 2 test.
  assert counts == {"introductory": 3, "competition": 2}
  assert len(out["train"]) + len(out["test"]) == 40


def test_unknown_dataset_and_split(tmp_path):
  with pytest.raises(UserError, match="unknown dataset 'nope'"):
    load.load_problems("nope", "train", data_dir=str(tmp_path))
  manual = _manual(tmp_path, "apps_plus", "apps_plus_call.json", "data.json")
  with pytest.raises(UserError, match=r"has no split 'validation'; it has \['test', 'train'\]"):
    load.load_problems("apps_plus", "validation", data_dir=str(tmp_path / "d"), manual_dir=manual)


def test_apps_folder_fixture(tmp_path):
  d = str(tmp_path / "d")
  manual = str(FIXTURES / "apps_dirs")
  train = load.load_problems("apps", "train", data_dir=d, manual_dir=manual)
  test = load.load_problems("apps", "test", data_dir=d, manual_dir=manual)
  _valid(train + test)
  assert [p.id for p in train] == ["apps/train/0001", "apps/train/0002"]
  assert [p.id for p in test] == ["apps/test/0003"]  # 0004 has no tests


def test_apps_real_subset(tmp_path):
  _need(SHARED / "apps")
  ps = load.load_problems("apps", "train", data_dir=str(tmp_path), manual_dir=str(SHARED))
  _valid(ps)
  assert len(ps) == 107
  assert Counter(p.difficulty for p in ps) == {
    "introductory": 35,
    "interview": 36,
    "competition": 36,
  }


def test_humaneval_real(tmp_path):
  _need(SHARED / "humaneval")
  ps = load.load_problems("humaneval", "test", data_dir=str(tmp_path), manual_dir=str(SHARED))
  _valid(ps)
  assert len(ps) == 164 and ps[0].id == "HumanEval/0" and ps[-1].id == "HumanEval/163"


def test_mbpp_real_split_sizes(tmp_path):
  _need(SHARED / "mbpp")
  builder = builders.prepare("mbpp", str(tmp_path), str(SHARED))
  sizes = {s: i.num_examples for s, i in builder.info.splits.items()}
  assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
  test = load.load_problems("mbpp", "test", data_dir=str(tmp_path), manual_dir=str(SHARED))
  _valid(test)
  assert (test[0].id, test[-1].id) == ("mbpp/11", "mbpp/510")
  assert mbpp.split_of(600) == "validation" and mbpp.split_of(601) == "train"


def test_prepare_force_rebuilds(tmp_path):
  manual = _manual(tmp_path, "apps_plus", "apps_plus_call.json", "data.json")
  d = str(tmp_path / "d")
  assert len(load.load_problems("apps_plus", "train", data_dir=d, manual_dir=manual)) == 1
  shutil.copy(FIXTURES / "apps_plus_stdio.json", Path(manual) / "apps_plus" / "data.json")
  # Built data is reused until --force.
  assert len(load.load_problems("apps_plus", "train", data_dir=d, manual_dir=manual)) == 1
  builders.prepare("apps_plus", d, manual, force=True)
  assert [p.id for p in load.load_problems("apps_plus", "train", data_dir=d)] == ["apps_plus/12"]


def test_stepcoder_builtin_split_rule(tmp_path):
  try:
    bundled = stepcoder_builtin.read_builtin()
  except UserError as e:
    pytest.skip(f"bundled set not written yet: {e}")
  train = load.load_problems("stepcoder_builtin", "train", data_dir=str(tmp_path))
  test = load.load_problems("stepcoder_builtin", "test", data_dir=str(tmp_path))
  _valid(train + test)
  assert len(train) + len(test) == len(bundled)
  assert all(int(p.id.rsplit("/", 1)[1]) % 5 == 0 for p in test)
  assert all(int(p.id.rsplit("/", 1)[1]) % 5 != 0 for p in train)
  assert {p.test_kind for p in test} == {"call", "stdio"}


def test_bundled_set_reads_by_name_with_the_documented_decoder(tmp_path):
  """docs/datasets.md: tfds.data_source by name, in a process that never imports our builders,
  and one line to turn a record into a Problem."""
  builders.prepare("stepcoder_builtin", str(tmp_path))
  code = (
    "import json, sys, tensorflow_datasets as tfds\n"
    "ds = tfds.data_source('stepcoder_builtin', split='test', data_dir=sys.argv[1])\n"
    "print(json.dumps([json.loads(ds[i]['record'])['id'] for i in range(len(ds))]))\n"
    "assert 'stepcoder_jax.data.builders' not in sys.modules\n"
  )
  p = subprocess.run(
    [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=900
  )
  assert p.returncode == 0, p.stderr[-2000:]
  test_ids = [
    p.id
    for p in stepcoder_builtin.read_builtin()
    if int(p.id.rsplit("/", 1)[1]) % stepcoder_builtin.TEST_MODULUS == 0
  ]
  assert json.loads(p.stdout.splitlines()[-1]) == test_ids
  ds = builders.get_builder("stepcoder_builtin", str(tmp_path)).as_data_source(split="test")
  assert Problem.from_dict(json.loads(ds[0]["record"])).id == test_ids[0]  # the one-line decoder


def test_bundled_set_built_from_other_contents_is_rebuilt(tmp_path):
  d = str(tmp_path)
  version_dir = builders.prepare("stepcoder_builtin", d).data_path
  (version_dir / "metadata.json").write_text(json.dumps({"content_hash": "edited-since"}))
  assert not builders.get_builder("stepcoder_builtin", d).is_current()
  rebuilt = builders.prepare("stepcoder_builtin", d)
  assert (
    rebuilt.is_current() and len(load.load_problems("stepcoder_builtin", "test", data_dir=d)) == 32
  )


def test_prepare_command(tmp_path, capsys):
  from stepcoder_jax import cli

  manual = _manual(tmp_path, "apps_plus", "apps_plus_call.json", "data.json")
  rc = cli.main(
    ["prepare", "--dataset", "apps_plus", "--data_dir", str(tmp_path / "d"), "--manual_dir", manual]
  )
  out = capsys.readouterr().out
  assert rc == 0
  assert "apps_plus test: 2 problems" in out and "apps_plus train: 1 problems" in out
  rc = cli.main(["prepare", "--dataset", "apps_plus", "--data_dir", str(tmp_path / "e")])
  assert rc == 2
  assert "data.json" in capsys.readouterr().err


def test_problems_from_args_file_flag_dataset_flag_and_gin(tmp_path):
  import argparse

  import gin

  from stepcoder_jax import gin_setup

  parser = argparse.ArgumentParser()
  parser.add_argument("--problems", default=None)
  load.add_dataset_arguments(parser)
  manual = _manual(tmp_path, "apps_plus", "apps_plus_call.json", "data.json")
  d = str(tmp_path / "d")
  args = parser.parse_args(["--problems", str(FIXTURES / "apps_plus_stdio.json")])
  assert len(load.problems_from_args(args)) == 4
  args = parser.parse_args(
    ["--dataset", "apps_plus", "--split", "train", "--data_dir", d, "--manual_dir", manual]
  )
  assert [p.id for p in load.problems_from_args(args)] == ["apps_plus/c3"]
  # Without flags the gin `dataset` config decides (eval_split for eval, train_split for train).
  gin_setup.parse(
    [], ['dataset.name = "apps_plus"', f'dataset.data_dir = "{d}"', 'dataset.eval_split = "test"']
  )
  try:
    args = parser.parse_args([])
    assert [p.id for p in load.problems_from_args(args)] == ["apps_plus/c1", "apps_plus/c2"]
    assert [p.id for p in load.problems_from_args(args, purpose="train")] == ["apps_plus/c3"]
  finally:
    gin.clear_config()


def test_building_leaves_no_temporary_directory(tmp_path, monkeypatch):
  """TFDS made an empty directory in $TMPDIR for every builder of an unprepared dataset (a look
  into its public bucket); ours are never there, so nothing is left behind."""
  import tempfile

  from stepcoder_jax.data.builders import read_split

  tmp = tmp_path / "tmpdir"
  tmp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(tmp))
  assert read_split("stepcoder_builtin", "train", str(tmp_path / "data"))
  assert list(tmp.iterdir()) == []
