"""stepcoder_jax: StepCoder (PPO + CCCS + FGO, arXiv 2402.01391) in JAX/Flax."""
__version__ = "0.1.0"
