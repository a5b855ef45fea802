"""`python -m stepcoder_jax <command>`: same as the `stepcoder-jax` console command."""

import sys

from stepcoder_jax.cli import main

if __name__ == "__main__":
  sys.exit(main())
