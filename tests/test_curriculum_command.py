"""`stepcoder-jax curriculum`: statement lines and stage lines per problem, from the CLI."""

import json

from stepcoder_jax import cli
from stepcoder_jax.data.record import Problem

# Line numbers:        1            2            3                4              5
SOLUTION = (
  "def f(xs):\n    t = 0\n    for x in xs:\n        if x > 0:\n            t += x\n"
  #  6                   7              8                9
  "        elif x < -5:\n            t -= 1\n    while t > 9:\n        t //= 2\n"
  # 10            11
  "    if t:\n        return t\n    return 0\n"
)


def _write(tmp_path, problems):
  path = tmp_path / "problems.jsonl"
  path.write_text("".join(p.to_json() + "\n" for p in problems))
  return str(path)


def _problems():
  call = Problem(
    id="call/1",
    question="q",
    test_kind="call",
    canonical_solution=SOLUTION,
    starter_code="def f(xs):\n",
    fn_name="f",
    inputs=[[[1]]],
    outputs=[1],
  )
  stdio = Problem(
    id="stdio/1",
    question="q",
    test_kind="stdio",
    canonical_solution="n = int(input())\nif n:\n    print(n)\n",
    inputs=["1"],
    outputs=["1"],
  )
  flat = Problem(
    id="flat/1",
    question="q",
    test_kind="stdio",
    canonical_solution="print(input())\n",
    inputs=["1"],
    outputs=["1"],
  )
  return [call, stdio, flat]


def _json_lines(capsys):
  return [json.loads(l) for l in capsys.readouterr().out.splitlines()]


def test_json_lines_give_statements_and_stages_in_training_order(tmp_path, capsys):
  path = _write(tmp_path, _problems())
  assert cli.main(["curriculum", "--problems", path, "--json"]) == 0
  # 'if' set: if (4), elif (6), if (10): E = 3, 2 start points 2 apart: statements 2 and 0;
  # then s* = 0: the policy writes from line 2, after the starter code.
  assert _json_lines(capsys) == [
    {"problem_id": "call/1", "statement_lines": [4, 6, 10], "stage_lines": [10, 4, 2]},
    {"problem_id": "stdio/1", "statement_lines": [2], "stage_lines": [2, 1]},
    {"problem_id": "flat/1", "statement_lines": [], "stage_lines": [1]},
  ]


def test_gin_statement_set_and_one_problem(tmp_path, capsys):
  path = _write(tmp_path, _problems())
  assert (
    cli.main(
      [
        "curriculum",
        "--problems",
        path,
        "--problem",
        "call/1",
        "--json",
        "--gin.cccs.statements='branching'",
      ]
    )
    == 0
  )
  # for (3), if (4), elif (6), while (8), if (10): E = 5, 3 start points 2 apart: 4, 2, 0.
  assert _json_lines(capsys) == [
    {"problem_id": "call/1", "statement_lines": [3, 4, 6, 8, 10], "stage_lines": [10, 6, 3, 2]}
  ]


def test_text_output_and_unknown_problem(tmp_path, capsys):
  path = _write(tmp_path, _problems())
  assert cli.main(["curriculum", "--problems", path, "--problem", "stdio/1"]) == 0
  out = capsys.readouterr().out
  assert "stdio/1: E = 1 (if) at lines 2" in out
  assert "stages in training order: line 2, line 1 (s* = 0" in out
  assert cli.main(["curriculum", "--problems", path, "--problem", "nope"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "'nope'" in err and "\n" not in err


def test_a_bad_statement_set_is_a_one_line_error(tmp_path, capsys):
  # Raised while gin builds CCCSConfig: gin appends its own "In call to configurable" line.
  path = _write(tmp_path, _problems())
  assert cli.main(["curriculum", "--problems", path, "--gin.cccs.statements='bogus'"]) == 2
  err = capsys.readouterr().err.strip()
  assert err == "error: gin cccs.statements: 'bogus' is not 'if' or 'branching'"


def test_checkpoint_shows_each_problem_where_the_run_left_it(tmp_path, capsys):
  import jax.numpy as jnp

  from stepcoder_jax import checkpoint as ckpt_lib
  from stepcoder_jax.config import CheckpointConfig
  from stepcoder_jax.models.config import ModelConfig
  from stepcoder_jax.rl.cccs import Curriculum
  from stepcoder_jax.rl.config import CCCSConfig

  call, stdio, flat = _problems()
  cur = Curriculum(CCCSConfig(schedule="adaptive", min_attempts=1))
  cur.register_all([call, flat])  # stdio/1: never drawn by this run
  for stage, verdicts in ((0, [True]), (1, [False, False]), (0, [True]), (1, [False, True])):
    cur.record_group("call/1", stage, verdicts)
  directory = ckpt_lib.checkpoint_dir(tmp_path / "run")
  ckpt_lib.save_inference_assets(directory, ModelConfig.tiny("llama", vocab_size=64, num_layers=1))
  with ckpt_lib.Checkpointer(directory, CheckpointConfig(async_save=False)) as ck:
    ck.save(7, {"policy": {"w": jnp.zeros(2)}}, meta={"iteration": 7, "curriculum": cur.to_json()})
  path = _write(tmp_path, [call, stdio, flat])
  assert (
    cli.main(["curriculum", "--problems", path, "--json", "--checkpoint", str(tmp_path / "run")])
    == 0
  )
  given = SOLUTION.index("        if x > 0")  # stage 1 starts at line 4
  assert _json_lines(capsys) == [
    {
      "problem_id": "call/1",
      "statement_lines": [4, 6, 10],
      "stage_lines": [10, 4, 2],
      "current_stage": 1,
      "attempts": 2,
      "passes": 1,
      "retreats": 1,
      "written_share": round(1 - given / len(SOLUTION), 4),
    },
    {"problem_id": "stdio/1", "statement_lines": [2], "stage_lines": [2, 1], "current_stage": None},
    {
      "problem_id": "flat/1",
      "statement_lines": [],
      "stage_lines": [1],
      "current_stage": 0,
      "attempts": 0,
      "passes": 0,
      "retreats": 0,
      "written_share": 1.0,
    },
  ]
  assert (
    cli.main(
      [
        "curriculum",
        "--problems",
        path,
        "--problem",
        "call/1",
        "--checkpoint",
        str(tmp_path / "run"),
      ]
    )
    == 0
  )
  out = capsys.readouterr().out
  assert "iteration 7, cccs.schedule = 'adaptive'" in out
  assert "now: stage 1 (the policy writes from line 4" in out and "moved back 1 time(s)" in out
  assert cli.main(["curriculum", "--problems", path, "--checkpoint", str(tmp_path)]) == 2
