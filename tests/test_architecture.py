"""The house: no import circle among stepcoder_jax's modules, and docs/ARCHITECTURE.md names every
room (package or top-level module) and the arrows between them as they are.

Imports are read statically (ast), wherever they are: at module level, inside functions (where
the project puts heavy or late imports, and where a circle hides best) and under `if`. Dynamic
imports (`importlib.import_module`: the CLI's command table, gin's config modules, the lazy
exports of `execution/`) are names in strings and are not followed. An import names one module:
`from p import x` is `p.x` when that is a module, else `p` itself; the parent packages Python
also initialises on the way are not counted (an `__init__.py` that imports its own submodules
would otherwise close a circle with each of them).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from stepcoder_jax.gin_setup import CONFIG_MODULES

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "stepcoder_jax"
DOC = ROOT / "docs" / "ARCHITECTURE.md"
# The floor: every room may import these, so the page does not draw arrows to them.
FLOOR = {f"{PACKAGE}.errors", *CONFIG_MODULES}


def modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
  """Dotted name -> file of every module under root/package (a package is its __init__.py)."""
  out = {}
  for f in sorted((root / package).rglob("*.py")):
    parts = f.relative_to(root).with_suffix("").parts
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
  return out


def _owner(name: str, known: dict[str, Path]) -> str | None:
  """The project module a dotted name lives in (its longest known prefix); None outside."""
  while name and name not in known:
    name = name.rpartition(".")[0]
  return name or None


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
  """The project modules that module `name` (file `path`) imports anywhere in its file."""
  is_package = path.name == "__init__.py"
  found = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
    if isinstance(node, ast.Import):
      found.update(_owner(a.name, known) for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:  # relative: counted from the importing module's package
        here = name.split(".") if is_package else name.split(".")[:-1]
        base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
      for a in node.names:
        sub = f"{base}.{a.name}"
        found.add(sub if sub in known else _owner(base, known))
  found.discard(None)
  found.discard(name)
  return found


def import_graph(root: Path, package: str = PACKAGE) -> dict[str, set[str]]:
  known = modules(root, package)
  return {m: imports(m, f, known) for m, f in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """One circle per strongly connected group of modules, as a path [a, b, ..., a] (Tarjan)."""
  index, low, stack, on_stack, groups = {}, {}, [], set(), []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = set()
      while True:
        w = stack.pop()
        on_stack.discard(w)
        group.add(w)
        if w == v:
          break
      if len(group) > 1:
        groups.append(group)

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return [_circle(graph, g) for g in groups]


def _circle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
  """A path that leaves the group's first module and comes back to it (breadth first)."""
  start = min(group)
  came_from = {w: start for w in sorted(graph[start] & group)}
  frontier = list(came_from)
  while start not in came_from:
    nxt = []
    for v in frontier:
      for w in sorted(graph[v] & group):
        if w not in came_from:
          came_from[w] = v
          nxt.append(w)
    frontier = nxt
  path, v = [start], came_from[start]
  while v != start:
    path.append(v)
    v = came_from[v]
  return [start, *reversed(path[1:]), start]


def test_no_import_circle_among_the_project_modules():
  graph = import_graph(ROOT)
  # The walk sees the tree: an import inside a function (commands load lazily) is an edge.
  assert "stepcoder_jax.ablation.plan" in graph["stepcoder_jax.commands.ablate"]
  found = cycles(graph)
  assert not found, "import circles:\n" + "\n".join(" -> ".join(c) for c in found)


def _write(root: Path, rel: str, text: str) -> None:
  f = root / rel
  f.parent.mkdir(parents=True, exist_ok=True)
  f.write_text(text, encoding="utf-8")


def test_a_circle_closed_inside_a_function_or_by_a_relative_import_is_found(tmp_path):
  _write(tmp_path, "pkg/__init__.py", "")
  _write(tmp_path, "pkg/a.py", "from pkg import b\n")
  _write(tmp_path, "pkg/b.py", "def f():\n  from pkg.c import g\n  return g\n")
  _write(tmp_path, "pkg/c.py", "import pkg.a\ng = 1\n")
  _write(tmp_path, "pkg/sub/__init__.py", "from . import d\n")  # a package importing its own
  _write(tmp_path, "pkg/sub/d.py", "from .e import x\nimport os\n")
  _write(tmp_path, "pkg/sub/e.py", "from ..sub import d\nx = 1\n")
  _write(tmp_path, "pkg/leaf.py", "from pkg.a import b\nfrom pkg import sub\n")  # no circle
  graph = import_graph(tmp_path, "pkg")
  assert graph["pkg.leaf"] == {"pkg.a", "pkg.sub"}
  assert graph["pkg.sub.d"] == {"pkg.sub.e"}  # os is not the project's
  assert cycles(graph) == [
    ["pkg.a", "pkg.b", "pkg.c", "pkg.a"],
    ["pkg.sub.d", "pkg.sub.e", "pkg.sub.d"],
  ]


# ------------------------------------------------------------------ docs/ARCHITECTURE.md


def room(module: str) -> str:
  """A module's room as the page writes it: 'rl/' for stepcoder_jax.rl.*, 'cli.py' for a
  top-level module."""
  parts = module.split(".")
  if (ROOT / PACKAGE / parts[1]).is_dir():
    return parts[1] + "/"
  return parts[1] + ".py"


def room_arrows(graph: dict[str, set[str]]) -> dict[str, set[str]]:
  """room -> the rooms its modules import (the floor and the room itself aside)."""
  out: dict[str, set[str]] = {}
  for m, targets in graph.items():
    if m == PACKAGE or m in FLOOR:
      continue
    out.setdefault(room(m), set()).update(room(t) for t in targets if t not in FLOOR)
  for r, targets in out.items():
    targets.discard(r)
  return out


def page_arrows(text: str) -> dict[str, set[str]]:
  """The arrows block of the page: '<room> <room it imports> ...' per line, '-' for none."""
  block = re.search(r"## Arrows.*?```text\n(.*?)```", text, re.S)
  assert block, "docs/ARCHITECTURE.md: no ```text block under '## Arrows'"
  out = {}
  for line in block.group(1).splitlines()[1:]:  # the first line is the header
    words = line.split("#", 1)[0].split()
    if words:
      out[words[0]] = {w for w in words[1:] if w != "-"}
  return out


def test_the_page_names_every_package_and_only_packages_that_exist():
  text = DOC.read_text(encoding="utf-8")
  packages = {
    str(f.parent.relative_to(ROOT / PACKAGE)) + "/"
    for f in (ROOT / PACKAGE).rglob("__init__.py")
    if f.parent != ROOT / PACKAGE
  }
  rows = [line for line in text.splitlines() if line.startswith("| `")]
  named = {n for line in rows for n in re.findall(r"`([\w/]+/)`", line.split("|")[1])}
  assert named == packages, (
    f"docs/ARCHITECTURE.md rooms table: missing {packages - named}, "
    f"no such package {named - packages}"
  )


def test_the_page_draws_every_room_and_arrow_as_the_imports_are():
  drawn = page_arrows(DOC.read_text(encoding="utf-8"))
  actual = room_arrows(import_graph(ROOT))
  assert set(drawn) == set(actual), (
    f"rooms missing from the page: {set(actual) - set(drawn)}; "
    f"on the page but not in the code: {set(drawn) - set(actual)}"
  )
  wrong = {
    r: (f"add {sorted(actual[r] - drawn[r])}, remove {sorted(drawn[r] - actual[r])}")
    for r in actual
    if drawn[r] != actual[r]
  }
  assert not wrong, f"docs/ARCHITECTURE.md arrows differ from the imports: {wrong}"
