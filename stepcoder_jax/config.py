"""Light gin-configurable config classes (no jax import), one per subsystem.

Heavy code receives these objects; gin fills them. Bindings look like `ppo.kl_coef = 0.05`.
Each subsystem owns its dataclass here, or in its own light module listed in
`gin_setup.CONFIG_MODULES`.
"""
