"""Light gin-configurable dataclasses (no jax import)."""
import dataclasses

import gin
