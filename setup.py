"""Package list for setuptools: the stepcoder_jax packages plus `configs/`, which stays at the top
of the repository and is installed as `stepcoder_jax/configs/` (pyproject.toml holds the rest)."""

from setuptools import find_packages, setup

setup(
  packages=find_packages(include=["stepcoder_jax", "stepcoder_jax.*"]) + ["stepcoder_jax.configs"],
  package_dir={"stepcoder_jax.configs": "configs"},
)
