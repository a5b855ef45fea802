"""`--model ORG/NAME`: a Hugging Face Hub id resolved through the local Hugging Face cache.

Nothing is downloaded (runs are offline by design): a model that is not in the cache gets a
one-line error saying how to download it. The caches looked in are the user's own (as
HF_HUB_CACHE / HF_HOME were before the CLI routed the library caches under the project's cache
root, see cache.py) and the current one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from stepcoder_jax import cache
from stepcoder_jax.errors import UserError

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def looks_like_hub_id(text: str) -> bool:
  """'org/name' that is not a path on disk."""
  return bool(_HUB_ID.fullmatch(text)) and not Path(text).expanduser().exists()


def _hub_cache(env) -> Path:
  if env.get("HF_HUB_CACHE"):
    return Path(env["HF_HUB_CACHE"]).expanduser()
  return Path(env.get("HF_HOME") or "~/.cache/huggingface").expanduser() / "hub"


def cache_dirs() -> list[Path]:
  dirs = [_hub_cache(cache.USER_ENV), _hub_cache(os.environ)]
  return list(dict.fromkeys(dirs))


def resolve(repo_id: str) -> Path:
  """The cached snapshot directory of `repo_id`, or a UserError saying how to get it."""
  from huggingface_hub import try_to_load_from_cache  # pylint: disable=import-outside-toplevel

  for d in cache_dirs():
    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(d))
    if isinstance(found, str):
      return Path(found).parent
  raise UserError(
    f"{repo_id}: no such file or directory, and no Hugging Face Hub model of that "
    f"id in the cache ({', '.join(map(str, cache_dirs()))}); to use the Hub "
    f"model, download it first: hf download {repo_id}"
  )
