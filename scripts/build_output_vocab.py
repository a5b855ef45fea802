"""Build an output vocabulary (`model.output_vocab`); see stepcoder_jax/models/vocab_build.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stepcoder_jax.models import vocab_build  # noqa: E402  (after the path insert)

if __name__ == "__main__":
  sys.exit(vocab_build.main())
