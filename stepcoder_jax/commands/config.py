"""`stepcoder-jax config`: parse gin files/bindings and print the resulting config (a dry run).

    stepcoder-jax config --gin_file experiments/tiny_cpu.gin [--gin.NAME=VALUE]   # what is set
    stepcoder-jax config --defaults [--gin_file ...]     # every setting, its default, its doc

`--defaults` reads the gin-configurable dataclasses of gin_setup.CONFIG_MODULES, so the list
cannot go stale; docs/configuration.md is the same list as markdown
(scripts/gen_config_docs.py, checked by tests/test_config_docs.py).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import io
import re
import tokenize

import gin

HELP = (
  "print the gin configuration the given --gin_file/--gin.NAME=VALUE make (validates "
  "them); --defaults lists every setting with its default"
)


def add_arguments(parser):
  parser.add_argument(
    "--defaults",
    action="store_true",
    help="list every gin setting with its default and what it does (and its "
    "value under the given --gin_file/--gin.NAME=VALUE when they change "
    "it)",
  )


@dataclasses.dataclass
class Setting:
  name: str  # the binding, e.g. "ppo.kl_coef"
  default: str  # as a gin literal
  doc: str


def _attribute_docs(cls) -> dict[str, str]:
  """Field descriptions: the docstring's `Attributes:` entries, else the field line's comment."""
  docs: dict[str, str] = {}
  text = inspect.getdoc(cls) or ""
  if "Attributes:" in text:
    current = None
    for line in text.split("Attributes:", 1)[1].splitlines():
      m = re.match(r"^  ([\w, ]+):\s*(.*)$", line)
      if m:
        current = [n.strip() for n in m.group(1).split(",")]
        for n in current:
          docs[n] = m.group(2).strip()
      elif current and line.startswith("    "):
        for n in current:
          docs[n] += " " + line.strip()
      elif line.strip():
        current = None
  try:
    source = inspect.getsource(cls)
  except (OSError, TypeError):
    return docs
  # Prose docstrings: "`name`: text" or "name / other: text" starting a line or a sentence.
  fields = {f.name for f in dataclasses.fields(cls)}
  heads = [
    m
    for m in re.finditer(r"(?:^|\n|(?<=\. ))\s*`?(\w+(?:\s*/\s*\w+)*)`?: ", text)
    if set(re.split(r"\s*/\s*", m.group(1))) <= fields
  ]
  for m, nxt in zip(heads, heads[1:] + [None]):
    body = text[m.end() : nxt.start() if nxt else len(text)].split("\n\n")[0]
    for name in re.split(r"\s*/\s*", m.group(1)):
      docs.setdefault(name, " ".join(body.split()))
  field_line, above = {}, []
  for tok in tokenize.generate_tokens(io.StringIO(source).readline):
    if tok.type == tokenize.NAME and tok.start[1] == 2 and tok.start[0] not in field_line:
      field_line[tok.start[0]] = tok.string
      if above:  # the comment lines right above the field
        docs.setdefault(tok.string, " ".join(above))
    if tok.type == tokenize.COMMENT and tok.start[0] in field_line:
      docs.setdefault(field_line[tok.start[0]], tok.string.lstrip("# ").strip())
    elif tok.type == tokenize.COMMENT and tok.start[1] == 2:
      above.append(tok.string.lstrip("# ").strip())
    elif tok.type not in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT):
      above = []
  return docs


def _literal(value) -> str:
  if isinstance(value, tuple) and len(value) > 8:
    return f"({', '.join(map(repr, value[:6]))}, ... {len(value)} in all)"
  return repr(value)


def configurables() -> list[tuple[str, type]]:
  """(gin name, dataclass) of every configurable in the config modules, in their order."""
  from stepcoder_jax import gin_setup

  out = []
  for module in gin_setup.CONFIG_MODULES:
    importlib.import_module(module)
  registry = gin.config._REGISTRY  # pylint: disable=protected-access  # gin has no public list
  for module in gin_setup.CONFIG_MODULES:
    for _, sel in sorted(registry.items()):
      if sel.module == module and dataclasses.is_dataclass(sel.wrapped):
        out.append((sel.name, sel.wrapped))
  return out


def settings(cls, name: str) -> list[Setting]:
  """The fields of `cls` that gin can bind under `name` (a denylisted field is set from another
  setting, so listing it would advertise a binding gin refuses), with their defaults."""
  docs = _attribute_docs(cls)
  denied = set(gin.config._REGISTRY.get_match(name).denylist or ())  # pylint: disable=protected-access
  out = []
  for f in dataclasses.fields(cls):
    if f.name in denied:
      continue
    if f.default is not dataclasses.MISSING:
      default = f.default
    elif f.default_factory is not dataclasses.MISSING:
      default = f.default_factory()
    else:
      continue  # no default: not a setting
    out.append(Setting(f"{name}.{f.name}", _literal(default), docs.get(f.name, "")))
  return out


def _summary(cls) -> str:
  return (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")


def defaults_text() -> str:
  """Every setting with its default; a value the parsed gin changes is shown beside it."""
  lines = []
  for name, cls in configurables():
    lines.append(f"# {name}: {_summary(cls)}")
    for s in settings(cls, name):
      try:
        now = f"  # now {_literal(gin.query_parameter(s.name))}"
      except ValueError:
        now = ""
      lines.append(f"{s.name} = {s.default}{now}")
    lines.append("")
  return "\n".join(lines)


def defaults_markdown() -> str:
  """docs/configuration.md."""
  text = [
    "# Configuration: every gin setting and its default",
    "",
    "Generated from the code by `python scripts/gen_config_docs.py` (a test fails when it "
    "is out of date); `stepcoder-jax config --defaults` prints the same list.",
    "",
    "Set a value on the command line with `--gin.NAME=VALUE` (a string needs quotes "
    "inside the shell's: `--gin.model.path=\"'gemma3-270m'\"`), or in a gin file given with "
    "`--gin_file FILE` (repeatable; a name such as `experiments/tiny_cpu.gin` is looked up "
    "in the shipped `configs/`), or from Python with `gin=` (see [api.md](api.md)). "
    "`stepcoder-jax config --gin_file FILE` prints what a file sets; every run saves the "
    "values it used in `operative_config.gin`.",
    "",
  ]
  for name, cls in configurables():
    text += [
      f"## `{name}`",
      "",
      f"{_summary(cls)} (`{cls.__module__}.{cls.__name__}`)",
      "",
      "| setting | default | what it does |",
      "|---|---|---|",
    ]
    for s in settings(cls, name):
      doc, default = (x.replace("|", "\\|") for x in (s.doc, s.default))
      text.append(f"| `{s.name}` | `{default}` | {doc} |")
    text.append("")
  return "\n".join(text)


def run(args) -> int:
  if args.defaults:
    print(defaults_text(), end="")
    return 0
  text = gin.config_str()
  print(
    text
    if text.strip()
    else "(nothing set: no --gin_file or --gin.NAME=VALUE given; "
    "`stepcoder-jax config --defaults` lists every setting with its default)"
  )
  return 0
