"""What a finished ablation stage's result depends on, so that a rerun never keeps a stale one.

A stage's fingerprint hashes its command (the run directory written as `<out>`), the gin settings
that command reads (each `--gin_file` replaced by its settings, comments dropped, includes
inlined), and the fingerprints of the stages whose outputs it reads (a path in its command that
is another stage's output directory). So a changed PPO setting invalidates each arm's training
and, through it, that arm's export and evaluations, but not SFT or the base and SFT evaluations:
only `train` reads the RL loop's settings (train/ppo/fgo/cccs), except `cccs.statements`, which
places the CCCS start points that SFT's examples and the subtask measure use.

DONE.json records the fingerprint with FINGERPRINT_VERSION. Markers of version 1 (the whole gin
text, no upstream stages) are checked the old way and, when they match, rewritten as version 2;
markers from before fingerprints are taken as they are.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable, Sequence

from stepcoder_jax import gin_setup
from stepcoder_jax.errors import UserError

FINGERPRINT_VERSION = 2
_INCLUDE = re.compile(r"""^\s*include\s+['"]([^'"]+)['"]""")
_RL_SCOPES = ("train.", "ppo.", "fgo.", "cccs.")
_READ_OUTSIDE_TRAIN = ("cccs.statements",)


def gin_lines(path: str, seen: set[str]) -> list[str]:
  """A gin file's settings as lines, comments and blank lines dropped, its includes inlined (so
  that editing a comment does not count as a change, and editing an included file does)."""
  f = str(Path(gin_setup.resolve_gin_file(path)).resolve())
  if f in seen:
    return []
  seen.add(f)
  lines = []
  for raw in Path(f).read_text(encoding="utf-8").splitlines():
    line = raw.split("#", 1)[0].strip()
    m = _INCLUDE.match(line)
    if m:
      lines += gin_lines(m.group(1), seen)
    elif line:
      lines.append(line)
  return lines


def _binding(text: str) -> str | None:
  """'ppo.kl_coef = 0.1' or '--gin.ppo.kl_coef=0.1' -> 'ppo.kl_coef'; None for anything else."""
  text = text[len("--gin."):] if text.startswith("--gin.") else text
  name = text.split("=", 1)[0].strip() if "=" in text else ""
  return name if "." in name and " " not in name else None


def reads(command: str, text: str) -> bool:
  """Whether a stage running `command` reads this gin setting (or flag); other text counts."""
  name = _binding(text)
  if command == "train" or name is None:
    return True
  return not name.startswith(_RL_SCOPES) or name in _READ_OUTSIDE_TRAIN


def _parts(stage, out: Path, keep: Callable[[str], bool]) -> list[str]:
  parts, seen, argv = [stage.module], set(), list(stage.argv)
  for i, a in enumerate(argv):
    if i > 0 and argv[i - 1] == "--gin_file":
      parts += [line for line in gin_lines(a, seen) if keep(line)]
    elif keep(a):
      parts.append(a.replace(str(out), "<out>"))
  return parts


def _hash(parts: list[str]) -> str:
  return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def legacy(stage, out: Path) -> str:
  """Version 1: the command with every gin setting, no upstream stages."""
  return _hash(_parts(stage, out, lambda _: True))


def _reads_output_of(token: str, directory: str) -> bool:
  return re.search(re.escape(directory) + r"""(?=$|[/'"])""", token) is not None


def fingerprints(stages: Sequence, out: Path) -> dict[str, str]:
  """Stage name -> fingerprint (version 2), in plan order (a stage's producers come first)."""
  command = {s.name: s.argv[0] if s.module == "stepcoder_jax" and s.argv else "" for s in stages}
  made: list[tuple[str, str]] = []  # (output directory, fingerprint) of the stages so far
  fps = {}
  for s in stages:
    own = _parts(s, out, lambda t, c=command[s.name]: reads(c, t))
    upstream = [fp for d, fp in made if any(_reads_output_of(a, d) for a in s.argv)]
    fps[s.name] = _hash(own + upstream)
    made.append((str(s.out), fps[s.name]))
  return fps


def record(fp: str) -> dict:
  """The DONE.json fields of a finished stage's fingerprint."""
  return {"fingerprint": fp, "fingerprint_version": FINGERPRINT_VERSION}


def stale(stages: Sequence, out: Path, read_done: Callable, write_done: Callable) -> list[Path]:
  """The DONE.json of each finished stage run with other settings than now. A version-1 marker
  that matches the old way is rewritten as version 2 (so a later change is judged per stage)."""
  fps, bad = fingerprints(stages, out), []
  for s in stages:
    done = read_done(s.out)
    if done is None or done.get("fingerprint") is None:
      continue  # not finished, or a marker from before fingerprints: taken as it is
    if done.get("fingerprint_version") == FINGERPRINT_VERSION:
      ok = done["fingerprint"] == fps[s.name]
    else:
      ok = done["fingerprint"] == legacy(s, out)
      if ok:
        write_done(s.out, {**done, **record(fps[s.name])})
    if not ok:
      bad.append(Path(s.out) / "DONE.json")
  return bad


def check(stages: Sequence, out: Path, read_done: Callable, write_done: Callable) -> None:
  """Stop before anything runs when a finished stage would be kept from other settings."""
  bad = stale(stages, out, read_done, write_done)
  if bad:
    raise UserError(f"ablate: {len(bad)} finished stage(s) ran with other settings than this "
                    f"run's (their command, gin settings or an earlier stage changed); delete "
                    f"{' '.join(str(b) for b in bad)} to redo them, or use a new --out")
