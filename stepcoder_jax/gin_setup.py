"""Gin flags with t5x's spelling: --gin_file=PATH (repeatable) and --gin.NAME=VALUE (repeatable).

Every gin configurable lives in a light module (no jax import) listed in CONFIG_MODULES, so that an
unknown binding is reported before any heavy import or compile.
"""

from __future__ import annotations

import importlib
import importlib.util  # noqa: F401  gin's package-path reader calls it without importing it
import logging
import os
from pathlib import Path

import gin

# Light modules that declare @gin.configurable config classes. Add yours here.
CONFIG_MODULES = (
  "stepcoder_jax.config",
  "stepcoder_jax.models.config",
  "stepcoder_jax.execution.config",
  "stepcoder_jax.data.config",
  "stepcoder_jax.rl.config",
  "stepcoder_jax.runs.config",
)


def configs_dir() -> Path:
  """The shipped gin files: `stepcoder_jax/configs/` in an installed wheel, else `configs/` at
  the top of the checkout this package runs from (a source tree or an editable install)."""
  here = Path(__file__).resolve().parent
  installed = here / "configs"
  if installed.is_dir():
    return installed
  return here.parent / "configs"


REPO_CONFIGS = configs_dir()


class GinError(ValueError):
  pass


def split_gin_args(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
  """Pull --gin_file and --gin.NAME=VALUE out of argv; return (rest, files, bindings)."""
  rest, files, bindings = [], [], []
  i = 0
  while i < len(argv):
    a = argv[i]
    if a == "--gin_file" or a == "--gin_file=":
      if i + 1 >= len(argv):
        raise GinError("--gin_file needs a path")
      files.append(argv[i + 1])
      i += 2
      continue
    if a.startswith("--gin_file="):
      files.append(a.split("=", 1)[1])
    elif a.startswith("--gin."):
      body = a[len("--gin.") :]
      if "=" not in body:
        if i + 1 >= len(argv):
          raise GinError(f"{a}: expected --gin.NAME=VALUE")
        body = f"{body}={argv[i + 1]}"
        i += 1
      name, value = body.split("=", 1)
      if not name:
        raise GinError(f"{a}: empty binding name")
      bindings.append(f"{name} = {value}")
    else:
      rest.append(a)
    i += 1
  return rest, files, bindings


def resolve_gin_file(path: str) -> str:
  """A gin file as given, else relative to configs/ (with or without .gin)."""
  candidates = [Path(path), REPO_CONFIGS / path, REPO_CONFIGS / f"{path}.gin"]
  for c in candidates:
    if c.is_file():
      return str(c)
  raise GinError(f"gin file not found: {path} (also looked in {REPO_CONFIGS})")


def parse(files: list[str], bindings: list[str]) -> None:
  """Import the config modules and parse; any gin problem becomes a one-line GinError."""
  for m in CONFIG_MODULES:
    importlib.import_module(m)
  resolved = [resolve_gin_file(f) for f in files]
  gin.clear_config()
  search_dirs = {os.path.dirname(os.path.abspath(f)) for f in resolved} | {str(REPO_CONFIGS)}
  for d in sorted(search_dirs):
    gin.add_config_file_search_path(d)
  # gin logs "Path not found" at ERROR while it tries an include against each search path before
  # finding it; a real failure still raises, so silence the root logger while parsing.
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.CRITICAL)
  try:
    gin.parse_config_files_and_bindings(resolved, bindings, finalize_config=False)
  except (ValueError, KeyError, ImportError, SyntaxError, IOError) as e:
    msg = " ".join(str(e).split())
    if "malformed node or string" in msg:  # gin's words for an unquoted string
      raise GinError(unquoted_hint(bindings, msg)) from None
    if "denylisted kwarg 'max_prompt_tokens'" in msg:  # the binding that moved
      msg = (
        "the prompt limit is prompt.max_tokens (one for training, evaluation and SFT), not "
        f"<scope>.max_prompt_tokens: {msg}"
      )
    raise GinError(f"bad gin config: {msg}") from None
  finally:
    root.setLevel(level)


def unquoted_hint(bindings: list[str], msg: str) -> str:
  """The error for a value gin cannot read, with the quoting a string needs on a command line."""
  for b in bindings:
    name, value = (x.strip() for x in b.split("=", 1))
    try:
      gin.config.parse_value(value)
    except (SyntaxError, ValueError):
      return (
        f"bad gin config: --gin.{name}={value}: gin cannot read the value {value!r}; a "
        f"string needs quotes inside the shell's: --gin.{name}=\"'{value}'\""
      )
  token = msg.split("Failed to parse token", 1)[-1].strip()
  return (
    f"bad gin config: gin cannot read the value at {token}; a string needs quotes: name = 'text'"
  )


def save_operative(path: str) -> None:
  """Write the operative config (the values actually used) next to a run's outputs."""
  Path(path).parent.mkdir(parents=True, exist_ok=True)
  Path(path).write_text(gin.operative_config_str())
