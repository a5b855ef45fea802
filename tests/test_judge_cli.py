"""`stepcoder-jax judge`: formats, order, malformed lines, canonical solutions, summary."""

import gzip
import json
import subprocess
import sys

from stepcoder_jax.cli import main
from stepcoder_jax.commands.judge import RESULT_FIELDS
from stepcoder_jax.data.record import Problem, write_jsonl

HE = [
  {
    "task_id": "HumanEval/0",
    "prompt": "def add(a, b):\n  \"\"\"Sum.\"\"\"\n",
    "canonical_solution": "  return a + b\n",
    "test": "def check(candidate):\n  assert candidate(1, 2) == 3\n",
    "entry_point": "add",
  },
  {
    "task_id": "HumanEval/1",
    "prompt": "def neg(a):\n",
    "canonical_solution": "  if a > 0:\n    return -a\n  else:\n    return -a\n",
    "test": "def check(candidate):\n  assert candidate(2) == -2\n",
    "entry_point": "neg",
  },
]


def _he_file(tmp_path):
  path = tmp_path / "he.jsonl.gz"
  with gzip.open(path, "wt") as f:
    for r in HE:
      f.write(json.dumps(r) + "\n")
  return str(path)


def _lines(path):
  return [json.loads(l) for l in open(path, encoding="utf-8")]


def test_completions_in_order_with_malformed_lines(tmp_path, capsys):
  comps = tmp_path / "c.jsonl"
  comps.write_text(
    "\n".join(
      [
        json.dumps({"problem_id": "HumanEval/1", "completion": "  return -a\n"}),
        "{not json",
        json.dumps({"problem_id": "HumanEval/0", "completion": "  return None\n"}),
        json.dumps({"problem_id": "HumanEval/9", "completion": "x"}),
        json.dumps({"problem_id": "HumanEval/0", "completion": "  return a +\n"}),
        json.dumps({"problem_id": "HumanEval/0", "completion": "  return a + b\n"}),
      ]
    )
    + "\n"
  )
  out = tmp_path / "r.jsonl"
  args = [
    "judge",
    "--problems",
    _he_file(tmp_path),
    "--completions",
    str(comps),
    "--out",
    str(out),
    "--workers",
    "1",
    "--timeout",
    "3",
  ]
  assert main(args) == 2
  err = capsys.readouterr().err
  assert f"{comps}:2: not valid JSON" in err

  assert main(args + ["--bad-lines", "skip"]) == 0
  cap = capsys.readouterr()
  assert f"skipped {comps}:2:" in cap.err and f"skipped {comps}:4:" in cap.err
  assert "'HumanEval/9'" in cap.err
  rows = _lines(out)
  assert [tuple(r) for r in rows] == [RESULT_FIELDS] * 4
  assert [(r["problem_id"], r["outcome"], r["reward"]) for r in rows] == [
    ("HumanEval/1", "passed", 1.0),
    ("HumanEval/0", "failed", -0.3),
    ("HumanEval/0", "compile_error", -1.0),
    ("HumanEval/0", "passed", 1.0),
  ]
  assert rows[0]["executed_lines"] == [1] and rows[0]["executable_lines"] == [1]
  assert [r["coverage_state"] for r in rows] == ["measured", "measured", "none", "measured"]
  assert "passed 2, failed 1, runtime_error 0, timeout 0, compile_error 1" in cap.out
  assert "programs/s" in cap.out and "skipped 2 line(s)" in cap.out


def test_use_canonical_on_our_records_and_mbpp(tmp_path, capsys):
  ours = tmp_path / "p.jsonl"
  write_jsonl(
    str(ours),
    [
      Problem(
        id="s",
        question="",
        test_kind="stdio",
        inputs=["2 3\n"],
        outputs=["5\n"],
        canonical_solution="a, b = map(int, input().split())\nprint(a + b)\n",
      ),
      Problem(
        id="c",
        question="",
        test_kind="call",
        fn_name="f",
        inputs=[[2]],
        outputs=[4],
        canonical_solution="def f(x):\n  return x * x\n",
      ),
    ],
  )
  out = tmp_path / "r.jsonl"
  assert (
    main(["judge", "--problems", str(ours), "--use-canonical", "--out", str(out), "--workers", "1"])
    == 0
  )
  assert [r["outcome"] for r in _lines(out)] == ["passed", "passed"]
  mb = tmp_path / "mbpp.jsonl"
  mb.write_text(
    json.dumps(
      {
        "task_id": 7,
        "text": "Double.",
        "code": "def dbl(x):\r\n  return 2*x",
        "test_list": ["assert dbl(1) == 2", "assert dbl(3) == 6"],
        "test_setup_code": "",
        "challenge_test_list": [],
      }
    )
    + "\n"
  )
  assert (
    main(["judge", "--problems", str(mb), "--use-canonical", "--out", str(out), "--workers", "1"])
    == 0
  )
  (row,) = _lines(out)
  assert (row["outcome"], row["tests_passed"], row["tests_total"]) == ("passed", 2, 2)
  capsys.readouterr()


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
  assert (
    main(
      [
        "judge",
        "--problems",
        str(tmp_path / "missing.jsonl"),
        "--use-canonical",
        "--out",
        str(tmp_path / "r.jsonl"),
      ]
    )
    == 2
  )
  assert "missing.jsonl" in capsys.readouterr().err
  assert main(["judge", "--problems", _he_file(tmp_path), "--out", str(tmp_path / "r.jsonl")]) == 2
  assert "--completions" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
  out = tmp_path / "r.jsonl"
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "stepcoder_jax",
      "judge",
      "--problems",
      _he_file(tmp_path),
      "--use-canonical",
      "--out",
      str(out),
      "--workers",
      "1",
    ],
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr
  assert [r["outcome"] for r in _lines(out)] == ["passed", "passed"]
  rows = _lines(out)
  # HumanEval: the prompt is the prefix, lines are the body's own; the else branch ran no test.
  assert rows[1]["executable_lines"] == [1, 2, 4] and rows[1]["executed_lines"] == [1, 2]


def test_gin_binds_execution_config(tmp_path, capsys):
  out = tmp_path / "r.jsonl"
  assert (
    main(
      [
        "judge",
        "--problems",
        _he_file(tmp_path),
        "--use-canonical",
        "--out",
        str(out),
        "--workers",
        "1",
        "--gin.execution.coverage=False",
      ]
    )
    == 0
  )
  assert all(r["executable_lines"] == [] for r in _lines(out))
  assert (
    main(
      [
        "judge",
        "--problems",
        _he_file(tmp_path),
        "--use-canonical",
        "--out",
        str(out),
        "--gin.execution.no_such_field=1",
      ]
    )
    == 2
  )
  capsys.readouterr()


def test_use_canonical_on_the_whole_bundled_set_through_tfds(tmp_path, capsys):
  """`judge --dataset stepcoder_builtin --split S --use-canonical`: every reference passes."""
  for split in ("train", "test"):
    out = tmp_path / f"{split}.jsonl"
    rc = main(
      [
        "judge",
        "--dataset",
        "stepcoder_builtin",
        "--split",
        split,
        "--data_dir",
        str(tmp_path / "tfds"),
        "--use-canonical",
        "--out",
        str(out),
        "--workers",
        "2",
      ]
    )
    assert rc == 0, capsys.readouterr().err
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == {"train": 128, "test": 32}[split]
    bad = [(r["problem_id"], r["outcome"], r["error"]) for r in rows if r["outcome"] != "passed"]
    assert not bad, bad[:3]
    assert all(r["reward"] == 1.0 and r["tests_passed"] == r["tests_total"] >= 5 for r in rows)


def test_problems_and_dataset_together_is_a_usage_error(tmp_path, capsys):
  rc = main(
    [
      "judge",
      "--problems",
      "x.jsonl",
      "--dataset",
      "mbpp",
      "--use-canonical",
      "--out",
      str(tmp_path / "o.jsonl"),
    ]
  )
  assert rc == 2
  assert "either --problems" in capsys.readouterr().err
