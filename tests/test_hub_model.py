"""`--model ORG/NAME`: a Hub id loads from the Hugging Face cache when it is there, and otherwise
fails with one line saying how to download it (nothing is downloaded)."""

import os
import subprocess
import sys
from pathlib import Path

from stepcoder_jax import cache
from stepcoder_jax.models import hub, loading
from tiny_hf import make_tiny_llama

ROOT = Path(__file__).resolve().parent.parent


def _cache_with(tmp_path, repo_id: str) -> Path:
  """A Hugging Face hub cache holding `repo_id` at one revision, laid out as the hub lays it."""
  hub_cache = tmp_path / "hub"
  repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
  rev = "0123456789abcdef0123456789abcdef01234567"
  make_tiny_llama(repo / "snapshots" / rev)
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text(rev)
  return hub_cache


def test_hub_id_in_the_users_cache_loads(tmp_path, monkeypatch):
  hub_cache = _cache_with(tmp_path, "someorg/tiny-coder")
  monkeypatch.setattr(cache, "USER_ENV", {"HF_HUB_CACHE": str(hub_cache)})
  assert hub.looks_like_hub_id("someorg/tiny-coder")
  assert hub.resolve("someorg/tiny-coder").parent.name == "snapshots"
  cfg, _, tok = loading.load_model("someorg/tiny-coder")
  assert cfg.family == "llama" and cfg.num_layers == 2 and tok is not None


def test_hub_id_not_in_the_cache_says_how_to_download_it(tmp_path):
  env = dict(os.environ, HF_HUB_CACHE=str(tmp_path / "empty_hub"))
  p = subprocess.run(
    [
      sys.executable,
      "-m",
      "stepcoder_jax",
      "generate",
      "--model",
      "someorg/not-there",
      "--prompt",
      "def f():",
    ],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert p.returncode == 2
  assert p.stderr.strip().count("\n") == 0, p.stderr
  assert "hf download someorg/not-there" in p.stderr and "empty_hub" in p.stderr
