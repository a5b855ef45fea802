"""Write docs/configuration.md from the code (every gin setting, its default, its description).

python scripts/gen_config_docs.py          # rewrite the file
python scripts/gen_config_docs.py --check  # exit 1 when the file is out of date
"""

import sys
from pathlib import Path

from stepcoder_jax.commands.config import defaults_markdown

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def main() -> int:
  text = defaults_markdown()
  if "--check" in sys.argv[1:]:
    if DOC.read_text(encoding="utf-8") != text:
      print(f"{DOC} is out of date: run python scripts/gen_config_docs.py", file=sys.stderr)
      return 1
    return 0
  DOC.write_text(text, encoding="utf-8")
  print(f"wrote {DOC}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
