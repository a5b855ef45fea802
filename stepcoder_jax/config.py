"""Light gin-configurable config classes (no jax import), one per subsystem.

Heavy code receives these objects; gin fills them. Bindings look like `ppo.kl_coef = 0.05`.
Each subsystem owns its dataclass here, or in its own light module listed in
`gin_setup.CONFIG_MODULES`.
"""

import dataclasses

import gin

# Logical axis name -> mesh axis (or axes, or None = replicated). The models annotate parameters
# with vocab, embed, heads, kv_heads, head_dim, mlp, norm; activations and batches use batch.
# FSDP shards the embed dimension of every matrix over `fsdp`; tensor parallelism splits heads,
# the MLP hidden dimension and the vocabulary over `tensor`.
DEFAULT_AXIS_RULES = (
  ("batch", ("data", "fsdp")),
  ("embed", "fsdp"),
  ("vocab", "tensor"),
  ("heads", "tensor"),
  ("kv_heads", "tensor"),
  ("mlp", "tensor"),
  ("head_dim", None),
  ("norm", None),
  ("length", None),
)


@gin.configurable("mesh")
@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh shape (data, fsdp, tensor); one axis may be -1 to take the remaining devices.

  The product must equal the global device count. `rules` maps the models' logical axis names
  to mesh axes; the policy, value and reference models may each get their own rules through
  `sharding.make_rules(overrides)`.
  """

  data: int = 1  # data-parallel axis size
  fsdp: int = -1  # parameter-sharding axis size (-1: the devices left)
  tensor: int = 1  # tensor-parallel axis size
  rules: tuple = DEFAULT_AXIS_RULES  # logical axis name -> mesh axis (or axes, or None)


@gin.configurable("distributed")
@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """Multi-process runtime (jax.distributed). Empty fields come from the environment.

  `initialize`: "auto" initializes when JAX_COORDINATOR_ADDRESS is set or on a TPU pod slice,
  "always" forces it, "never" skips it (one process).
  """

  initialize: str = "auto"
  coordinator_address: str = ""  # host:port of process 0 ("": from the environment)
  num_processes: int = 0  # 0: from the environment
  process_id: int = -1  # -1: from the environment
  local_device_ids: tuple = ()  # devices of this process (): all
  initialization_timeout_s: int = 300  # wait this long for every process to join


@gin.configurable("checkpoint")
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """Orbax checkpoints of a training run (under <workdir>/checkpoints)."""

  save_interval_steps: int = 50  # checkpoint every this many iterations (and at the end)
  max_to_keep: int = 3  # newest checkpoints kept
  async_save: bool = True  # write in the background while training goes on
  # Also keep every k-th step forever (0: none), for before/after evaluations.
  keep_period: int = 0


# The evaluation config ('eval') is EvalConfig in stepcoder_jax/runs/config.py.
