"""CLI contract: usage errors are one line, exit 2, and happen before any heavy import."""

import subprocess
import sys
import time

import pytest

from stepcoder_jax import gin_setup


def _run(*argv):
  t = time.time()
  p = subprocess.run([sys.executable, "-m", "stepcoder_jax", *argv], capture_output=True, text=True)
  return p, time.time() - t


def test_unknown_command_exits_2_with_one_line():
  p, _ = _run("frobnicate")
  assert p.returncode == 2
  assert len(p.stderr.strip().splitlines()) == 1
  assert "unknown command 'frobnicate'" in p.stderr


def test_bad_flag_exits_2():
  p, _ = _run("config", "--no-such-flag")
  assert p.returncode == 2
  assert len(p.stderr.strip().splitlines()) == 1
  assert "--no-such-flag" in p.stderr


def test_missing_gin_file_exits_2():
  p, _ = _run("config", "--gin_file=does/not/exist.gin")
  assert p.returncode == 2
  assert "gin file not found: does/not/exist.gin" in p.stderr


def test_unknown_gin_binding_exits_2_before_heavy_imports():
  code = (
    "import sys\n"
    "from stepcoder_jax import cli\n"
    "rc = cli.main(['config', '--gin.no_such_configurable.x=1'])\n"
    "heavy = [m for m in ('jax', 'torch', 'transformers', 'flax') if m in sys.modules]\n"
    "print(rc, heavy)\n"
  )
  p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert p.stdout.strip() == "2 []", p.stdout + p.stderr
  assert "no_such_configurable" in p.stderr


def test_gin_flag_spelling_is_split_like_t5x():
  rest, files, bindings = gin_setup.split_gin_args(
    ["train", "--gin_file=a.gin", "--gin_file", "b.gin", "--gin.ppo.kl_coef=0.05", "--x"]
  )
  assert rest == ["train", "--x"]
  assert files == ["a.gin", "b.gin"]
  assert bindings == ["ppo.kl_coef = 0.05"]


def test_gin_file_is_searched_in_configs(tmp_path):
  with pytest.raises(gin_setup.GinError):
    gin_setup.resolve_gin_file("experiments/definitely_missing")
  f = tmp_path / "x.gin"
  f.write_text("")
  assert gin_setup.resolve_gin_file(str(f)) == str(f)


def test_help_lists_commands():
  p, _ = _run("--help")
  assert p.returncode == 0
  assert "config" in p.stdout


@pytest.mark.parametrize(
  "command,split",
  [
    ("sft", "train_split"),
    ("train", "train_split"),
    ("curriculum", "train_split"),
    ("eval", "eval_split"),
  ],
)
def test_split_help_names_the_gin_split_the_command_reads(command, split):
  p, _ = _run(command, "--help")
  assert p.returncode == 0
  assert f"default: gin dataset.{split}" in " ".join(p.stdout.split())


# ----------------------------------------------------------------------------- requests that
# cannot be done: one line, nonzero exit (issue 29.6)


def _one_error_line(p, code: int, text: str) -> None:
  errors = [l for l in p.stderr.splitlines() if l.startswith("error:")]
  assert p.returncode == code, p.stderr[-2000:]
  assert len(errors) == 1 and text in errors[0], p.stderr[-2000:]
  assert "Traceback" not in p.stderr


def test_eval_asking_for_several_greedy_samples_is_refused(tmp_path):
  p, _ = _run("eval", "--n", "2", "--k", "1,2", "--temperature", "0", "--out", str(tmp_path))
  _one_error_line(p, 2, "greedy decoding gives one sample per problem")
  p, _ = _run("eval", "--n", "2", "--k", "5", "--temperature", "0.8", "--out", str(tmp_path))
  _one_error_line(p, 2, "pass@5 needs at least 5 samples")


def test_empty_problem_or_completion_files_are_refused(tmp_path):
  empty = tmp_path / "empty.jsonl"
  empty.write_text("")
  p, _ = _run("curriculum", "--problems", str(empty))
  _one_error_line(p, 2, f"{empty}: no problems")
  out = ("--out", str(tmp_path / "results.jsonl"))
  p, _ = _run("judge", "--problems", str(empty), "--completions", str(empty), *out)
  _one_error_line(p, 2, f"{empty}: no problems")
  one = tmp_path / "one.jsonl"
  one.write_text(
    '{"id": "p1", "question": "q", "test_kind": "stdio", "inputs": ["1\\n"], "outputs": ["1\\n"]}\n'
  )
  p, _ = _run("judge", "--problems", str(one), "--completions", str(empty), *out)
  _one_error_line(p, 2, "no completions in")


def test_output_into_a_closed_pipe_ends_without_a_traceback():
  import os

  read, write = os.pipe()
  os.close(read)  # the reader is gone before the first write, as after `| head` has its lines
  p = subprocess.run(
    [sys.executable, "-m", "stepcoder_jax", "config", "--gin_file=experiments/tiny_cpu.gin"],
    stdout=write,
    stderr=subprocess.PIPE,
    text=True,
  )
  os.close(write)
  assert p.returncode == 141 and p.stderr == "", p.stderr


def test_ctrl_c_is_one_line_and_exit_130():
  # A real SIGINT delivered while a command runs (train's loop takes the same path).
  code = (
    "import os, signal, sys\n"
    "from stepcoder_jax import cli\n"
    "from stepcoder_jax.commands import config\n"
    "config.run = lambda args: os.kill(os.getpid(), signal.SIGINT) or signal.pause()\n"
    "sys.exit(cli.main(['config']))\n"
  )
  p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
  _one_error_line(p, 130, "stepcoder-jax config: interrupted (Ctrl-C)")
  assert len(p.stderr.strip().splitlines()) == 1
