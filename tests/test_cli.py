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
      "print(rc, heavy)\n")
  p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert p.stdout.strip() == "2 []", p.stdout + p.stderr
  assert "no_such_configurable" in p.stderr


def test_gin_flag_spelling_is_split_like_t5x():
  rest, files, bindings = gin_setup.split_gin_args(
      ["train", "--gin_file=a.gin", "--gin_file", "b.gin", "--gin.ppo.kl_coef=0.05", "--x"])
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


@pytest.mark.parametrize("command,split", [("sft", "train_split"), ("train", "train_split"),
                                           ("curriculum", "train_split"),
                                           ("eval", "eval_split")])
def test_split_help_names_the_gin_split_the_command_reads(command, split):
  p, _ = _run(command, "--help")
  assert p.returncode == 0
  assert f"default: gin dataset.{split}" in " ".join(p.stdout.split())
