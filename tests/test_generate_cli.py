"""`stepcoder-jax generate` on a tiny model directory, and its bad-input errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stepcoder_jax import cli
import tiny_hf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

PROMPT = "def square(x):\n    return"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  """A random tiny Llama saved by transformers, with the tiny tokenizer."""
  path = tmp_path_factory.mktemp("tiny_llama_cli")
  model, tok = tiny_hf.make_tiny_llama(
    path,
    seed=1,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=128,
  )
  return path, model, tok


def test_generate_prints_transformers_greedy_completion(tiny_dir, capsys):
  path, model, tok = tiny_dir
  n = 12
  rc = cli.main(
    [
      "generate",
      "--model",
      str(path),
      "--prompt",
      PROMPT,
      "--max_new_tokens",
      str(n),
      "--temperature",
      "0",
    ]
  )
  assert rc == 0
  printed = capsys.readouterr().out
  enc = tok(PROMPT, return_tensors="pt")
  with torch.no_grad():
    ref = model.generate(
      **enc,
      do_sample=False,
      max_new_tokens=n,
      eos_token_id=tok.eos_token_id,
      pad_token_id=tok.pad_token_id,
    )
  new = ref[0, enc["input_ids"].shape[1] :].tolist()
  if new and new[-1] == tok.eos_token_id:
    new = new[:-1]
  want = tok.decode(new)
  assert printed == (want if want.endswith("\n") else want + "\n")


def test_generate_sampling_flags_and_stop(tiny_dir, capsys):
  path, _, _ = tiny_dir
  args = [
    "generate",
    "--model",
    str(path),
    "--prompt",
    PROMPT,
    "--max_new_tokens",
    "8",
    "--temperature",
    "0.8",
    "--top_p",
    "0.9",
    "--top_k",
    "20",
    "--seed",
    "3",
  ]
  assert cli.main(args) == 0
  first = capsys.readouterr().out
  assert cli.main(args) == 0
  assert capsys.readouterr().out == first  # same seed, same text
  stop = first.strip("\n")[:1]
  if stop:
    assert cli.main(args + ["--stop", stop]) == 0
    assert capsys.readouterr().out == first[: first.index(stop)] + "\n"


def _run(*argv):
  return subprocess.run(
    [sys.executable, "-m", "stepcoder_jax", *argv], capture_output=True, text=True, timeout=900
  )


def test_bad_model_path_exits_2_with_one_line(tmp_path):
  p = _run("generate", "--model", str(tmp_path / "nope"), "--prompt", "x")
  assert p.returncode == 2
  lines = p.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: ") and "nope" in lines[0]
  assert p.stdout == ""


def test_dir_without_config_exits_2_naming_config_json(tmp_path):
  p = _run("generate", "--model", str(tmp_path), "--prompt", "x")
  assert p.returncode == 2
  errors = [l for l in p.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 1 and "config.json" in errors[0] and str(tmp_path) in errors[0]


def test_bad_sampling_flag_exits_2(capsys):
  assert cli.main(["generate", "--model", "tiny-llama", "--prompt", "x", "--top_p", "1.5"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "top_p" in err[0]
