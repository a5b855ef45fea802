"""`stepcoder-jax curriculum`: statement lines and stage lines per problem, from the CLI."""
import json

from stepcoder_jax import cli
from stepcoder_jax.data.record import Problem

# Line numbers:        1            2            3                4              5
SOLUTION = ("def f(xs):\n    t = 0\n    for x in xs:\n        if x > 0:\n            t += x\n"
            #  6                   7              8                9
            "        elif x < -5:\n            t -= 1\n    while t > 9:\n        t //= 2\n"
            # 10            11
            "    if t:\n        return t\n    return 0\n")


def _write(tmp_path, problems):
  path = tmp_path / "problems.jsonl"
  path.write_text("".join(p.to_json() + "\n" for p in problems))
  return str(path)


def _problems():
  call = Problem(id="call/1", question="q", test_kind="call", canonical_solution=SOLUTION,
                 starter_code="def f(xs):\n", fn_name="f", inputs=[[[1]]], outputs=[1])
  stdio = Problem(id="stdio/1", question="q", test_kind="stdio",
                  canonical_solution="n = int(input())\nif n:\n    print(n)\n", inputs=["1"],
                  outputs=["1"])
  flat = Problem(id="flat/1", question="q", test_kind="stdio",
                 canonical_solution="print(input())\n", inputs=["1"], outputs=["1"])
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
      {"problem_id": "flat/1", "statement_lines": [], "stage_lines": [1]}]


def test_gin_statement_set_and_one_problem(tmp_path, capsys):
  path = _write(tmp_path, _problems())
  assert cli.main(["curriculum", "--problems", path, "--problem", "call/1", "--json",
                   "--gin.cccs.statements='branching'"]) == 0
  # for (3), if (4), elif (6), while (8), if (10): E = 5, 3 start points 2 apart: 4, 2, 0.
  assert _json_lines(capsys) == [
      {"problem_id": "call/1", "statement_lines": [3, 4, 6, 8, 10], "stage_lines": [10, 6, 3, 2]}]


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
