"""What a finished ablation stage's result depends on, so that a rerun never keeps a stale one.

A stage's fingerprint hashes its command (the run directory written as `<out>`), the gin settings
in effect that its command reads (its gin files, includes inlined, and --gin flags, the last
binding of a name winning; comments and order aside), and the fingerprints of the stages whose
outputs it reads (a path in its command that is another stage's output directory). So a changed
PPO setting invalidates each arm's training and, through it, that arm's export and evaluations,
but not SFT or the base and SFT evaluations: only `train` reads the RL loop's settings
(train/ppo/fgo/cccs), except `cccs.statements`, which places the CCCS start points that SFT's
examples and the subtask measure use.

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


_BINDING = re.compile(r"^([A-Za-z_][\w./]*)\s*=\s*(.*)$")


def gin_settings(path: str, seen: set[str]) -> list[tuple[str, str]]:
  """(name, value) of each binding in a gin file, in order, includes inlined; a line that does
  not start a binding continues the previous one's value (a list over several lines)."""
  out: list[tuple[str, str]] = []
  for line in gin_lines(path, seen):
    m = _BINDING.match(line)
    if m:
      out.append((m.group(1), m.group(2).strip()))
    elif out:
      out[-1] = (out[-1][0], out[-1][1] + " " + line)
  return out


def reads(command: str, name: str) -> bool:
  """Whether a stage running `command` reads the gin binding `name` (RL scopes: train only)."""
  if command == "train" or "." not in name:  # a macro's use cannot be traced: keep it
    return True
  return not name.startswith(_RL_SCOPES) or name in _READ_OUTSIDE_TRAIN


def _parts(stage, out: Path) -> list[str]:
  """The stage's command with its gin files and --gin flags folded into the settings in effect
  (the last binding of a name wins, as in gin), those its command reads, sorted by name."""
  command = stage.argv[0] if stage.module == "stepcoder_jax" and stage.argv else ""
  parts, seen, argv, effective = [stage.module], set(), list(stage.argv), {}
  for i, a in enumerate(argv):
    if a == "--gin_file":
      continue
    if i > 0 and argv[i - 1] == "--gin_file":
      effective.update(gin_settings(a, seen))
    elif a.startswith("--gin.") and "=" in a:
      name, value = a[len("--gin.") :].split("=", 1)
      effective[name.strip()] = value.strip()
    else:
      parts.append(a.replace(str(out), "<out>"))
  parts += [
    f"{n} = {v}".replace(str(out), "<out>")
    for n, v in sorted(effective.items())
    if reads(command, n)
  ]
  return parts


def _hash(parts: list[str]) -> str:
  return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def legacy(stage, out: Path) -> str:
  """Version 1: the command with each gin file's lines in place, no upstream stages."""
  parts, seen, argv = [stage.module], set(), list(stage.argv)
  for i, a in enumerate(argv):
    if i > 0 and argv[i - 1] == "--gin_file":
      parts += gin_lines(a, seen)
    else:
      parts.append(a.replace(str(out), "<out>"))
  return _hash(parts)


def _reads_output_of(token: str, directory: str) -> bool:
  return re.search(re.escape(directory) + r"""(?=$|[/'"])""", token) is not None


def upstream(stages: Sequence) -> dict[str, list[str]]:
  """Stage name -> the earlier stages whose output directory its command names (plan order:
  a stage's producers come first)."""
  ups: dict[str, list[str]] = {}
  for i, s in enumerate(stages):
    ups[s.name] = [
      p.name for p in stages[:i] if any(_reads_output_of(a, str(p.out)) for a in s.argv)
    ]
  return ups


def fingerprints(stages: Sequence, out: Path) -> dict[str, str]:
  """Stage name -> fingerprint (version 2)."""
  ups, fps = upstream(stages), {}
  for s in stages:
    fps[s.name] = _hash(_parts(s, out) + [fps[u] for u in ups[s.name]])
  return fps


def record(fp: str) -> dict:
  """The DONE.json fields of a finished stage's fingerprint."""
  return {"fingerprint": fp, "fingerprint_version": FINGERPRINT_VERSION}


def stale(stages: Sequence, out: Path, read_done: Callable, write_done: Callable) -> list[Path]:
  """The DONE.json of each finished stage run with other settings than now. A version-1 marker
  that matches the old way is rewritten as version 2 (so a later change is judged per stage)."""
  fps, ups, bad = fingerprints(stages, out), upstream(stages), {}
  for s in stages:
    done = read_done(s.out)
    if done is None or done.get("fingerprint") is None:
      continue  # not finished, or a marker from before fingerprints: taken as it is
    if done.get("fingerprint_version") == FINGERPRINT_VERSION:
      ok = done["fingerprint"] == fps[s.name]
    else:  # version 1 knew no upstream stages: a stale producer makes this stale too
      ok = done["fingerprint"] == legacy(s, out) and not any(u in bad for u in ups[s.name])
      if ok:
        write_done(s.out, {**done, **record(fps[s.name])})
    if not ok:
      bad[s.name] = Path(s.out) / "DONE.json"
  return list(bad.values())


def check(stages: Sequence, out: Path, read_done: Callable, write_done: Callable) -> None:
  """Stop before anything runs when a finished stage would be kept from other settings."""
  bad = stale(stages, out, read_done, write_done)
  if bad:
    raise UserError(
      f"ablate: {len(bad)} finished stage(s) ran with other settings than this "
      f"run's (their command, gin settings or an earlier stage changed); delete "
      f"{' '.join(str(b) for b in bad)} to redo them, or use a new --out"
    )
