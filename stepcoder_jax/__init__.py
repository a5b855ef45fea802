"""stepcoder_jax: StepCoder (PPO + CCCS + FGO, arXiv 2402.01391) in JAX/Flax.

The Python API (`stepcoder_jax.api`, docs/api.md) is importable from here:
`stepcoder_jax.train(...)`, `sft`, `evaluate`, `judge`, `export`. It loads on first use, so that
`import stepcoder_jax` (and the CLI's flag checks) stay light.
"""

__version__ = "0.1.0"

_API = ("TrainResult", "configure", "load_problems", "sft", "train", "evaluate", "judge", "export")


def __getattr__(name):
  if name in _API:
    from stepcoder_jax import api

    return getattr(api, name)
  raise AttributeError(f"module 'stepcoder_jax' has no attribute {name!r}")


def __dir__():
  return sorted([*globals(), *_API])
