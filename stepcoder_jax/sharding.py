"""Device mesh (data, fsdp, tensor), logical-axis rules and placement of arrays on the mesh.

The models annotate every parameter with logical axis names (`vocab, embed, heads, kv_heads,
head_dim, mlp, norm`) in the nnx `out_sharding` metadata. Here those names become mesh axes
through rules from gin (`mesh.rules`), so the same model code runs on one CPU, one GPU or a TPU
pod slice: only the mesh shape and the rules change.

Rules are applied by this module, not by flax's global rule context, for two reasons: a logical
name without a rule must mean "replicated" (flax would pass the name through as a mesh axis), and
a dimension that a mesh axis does not divide (e.g. 2 kv heads on a tensor axis of 4) must fall
back to replication instead of failing to compile.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stepcoder_jax.config import DEFAULT_AXIS_RULES, DistributedConfig, MeshConfig
from stepcoder_jax.errors import UserError

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Mapping[str, Any]  # logical name -> mesh axis name | tuple of names | None


# --------------------------------------------------------------------------------------------
# Multi-process runtime


def _env_int(name: str, default: int) -> int:
  v = os.environ.get(name, "")
  return int(v) if v.strip() else default


def distributed_init(cfg: DistributedConfig | None = None) -> bool:
  """Start jax.distributed when this is one process of several; returns whether it did.

  On TPU pod slices jax discovers the coordinator itself. Elsewhere (GPU clusters, the local CPU
  pod of launch/local_pod.sh) the coordinator comes from the config or from the environment:
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (and JAX_LOCAL_DEVICE_IDS).
  Must run before anything touches the devices.
  """
  cfg = cfg or DistributedConfig()
  mode = cfg.initialize
  if mode not in ("auto", "always", "never"):
    raise UserError(f"gin distributed.initialize: expected auto|always|never, got {mode!r}")
  if mode == "never":
    return False
  address = cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  num = cfg.num_processes or _env_int("JAX_NUM_PROCESSES", 0)
  pid = cfg.process_id if cfg.process_id >= 0 else _env_int("JAX_PROCESS_ID", -1)
  local_ids = list(cfg.local_device_ids)
  if not local_ids and os.environ.get("JAX_LOCAL_DEVICE_IDS"):
    local_ids = [int(x) for x in os.environ["JAX_LOCAL_DEVICE_IDS"].split(",")]
  if mode == "auto" and not address and not _cluster_detectable():
    return False
  if jax.distributed.is_initialized():
    return True
  kwargs: dict[str, Any] = {"initialization_timeout": cfg.initialization_timeout_s}
  if address:
    if num <= 0 or pid < 0:
      raise UserError(
        "distributed: JAX_COORDINATOR_ADDRESS is set but JAX_NUM_PROCESSES / "
        "JAX_PROCESS_ID (or distributed.num_processes / process_id) are not"
      )
    kwargs.update(coordinator_address=address, num_processes=num, process_id=pid)
  if local_ids:
    kwargs["local_device_ids"] = local_ids
  # CPU collectives across processes need gloo (the default CPU client is single-process);
  # the setting only concerns the CPU backend, so it is harmless on GPU and TPU.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  log.info(
    "jax.distributed: process %d of %d, %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )
  return True


def _cluster_detectable() -> bool:
  """Whether jax.distributed can find its peers by itself: a Cloud TPU VM (libtpu and TPU
  devices present; also fine on a single host) or a multi-task SLURM / Open MPI job."""
  import glob
  import importlib.util

  if importlib.util.find_spec("libtpu") is not None and (
    glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
  ):
    return True
  if _env_int("SLURM_NTASKS", 1) > 1 and os.environ.get("SLURM_JOB_ID"):
    return True
  return _env_int("OMPI_COMM_WORLD_SIZE", 1) > 1


# --------------------------------------------------------------------------------------------
# Mesh


def mesh_shape(cfg: MeshConfig, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) with at most one -1 filled so that the product is num_devices."""
  dims = [cfg.data, cfg.fsdp, cfg.tensor]
  bad = [f"mesh.{n}={d}" for n, d in zip(MESH_AXES, dims) if d == 0 or d < -1]
  if bad:
    raise UserError(f"gin {', '.join(bad)}: each mesh axis must be a positive size or -1")
  fill = [i for i, d in enumerate(dims) if d == -1]
  if len(fill) > 1:
    raise UserError(f"gin mesh: at most one axis may be -1, got (data, fsdp, tensor)={tuple(dims)}")
  known = math.prod(d for d in dims if d != -1)
  if fill:
    if num_devices % known:
      raise UserError(
        f"gin mesh (data, fsdp, tensor)={tuple(dims)}: the fixed axes ({known}) do "
        f"not divide the {num_devices} devices"
      )
    dims[fill[0]] = num_devices // known
  if math.prod(dims) != num_devices:
    raise UserError(
      f"gin mesh (data, fsdp, tensor)={tuple(dims)} has {math.prod(dims)} devices "
      f"but {num_devices} are available; set one axis to -1 to fill"
    )
  return tuple(dims)  # type: ignore[return-value]


def make_mesh(cfg: MeshConfig | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The (data, fsdp, tensor) mesh over all global devices (or the given ones)."""
  cfg = cfg or MeshConfig()
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(cfg, len(devices))
  try:
    # Topology-aware order (ICI rings on TPU); tensor, the most communicating axis, is innermost.
    from jax.experimental import mesh_utils

    arr = mesh_utils.create_device_mesh(shape, devices=devices, allow_split_physical_axes=True)
  except Exception:  # pylint: disable=broad-except  (unusual topologies: plain order)
    arr = np.asarray(devices, dtype=object).reshape(shape)
  return Mesh(arr, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)


def make_rules(
  rules: Iterable[tuple[str, Any]] | Mapping[str, Any] | None = None,
  overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """Logical-name -> mesh-axis dict from gin rules (a tuple of pairs), plus per-model overrides."""
  items = DEFAULT_AXIS_RULES if rules is None else rules
  out = dict(items.items() if isinstance(items, Mapping) else items)
  out.update(overrides or {})
  for name, axes in out.items():
    for a in _as_tuple(axes):
      if a not in MESH_AXES:
        raise UserError(
          f"gin mesh.rules: logical axis {name!r} maps to unknown mesh axis {a!r}; "
          f"mesh axes are {MESH_AXES}"
        )
  return out


def _as_tuple(axes: Any) -> tuple[str, ...]:
  if axes is None:
    return ()
  if isinstance(axes, str):
    return (axes,)
  return tuple(axes)


def logical_to_spec(
  logical: Sequence[str | None] | None, shape: Sequence[int], mesh: Mesh, rules: Mapping[str, Any]
) -> PartitionSpec:
  """PartitionSpec for an array of `shape` whose dimensions carry logical names.

  Unmapped names are replicated; a mesh axis is used at most once per array; mesh axes that do
  not divide the dimension are dropped (the dimension is then split over fewer axes or none).
  """
  if not logical:
    return PartitionSpec()
  if len(logical) != len(shape):
    raise ValueError(f"logical axes {tuple(logical)} do not match shape {tuple(shape)}")
  used: set[str] = set()
  out: list[Any] = []
  for name, dim in zip(logical, shape):
    axes = [a for a in _as_tuple(rules.get(name) if name else None) if a not in used]
    while axes and dim % math.prod(mesh.shape[a] for a in axes):
      axes.pop()  # keep the outer axes that still divide
    axes = [a for a in axes if mesh.shape[a] > 1] or []
    used.update(axes)
    out.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
  while out and out[-1] is None:
    out.pop()
  return PartitionSpec(*out)


def variable_logical_axes(v: nnx.Variable) -> tuple | None:
  """The logical axis names an nnx Variable was annotated with (flax 0.12: `out_sharding`)."""
  md = v.get_metadata()
  for key in ("out_sharding", "sharding", "sharding_names"):
    names = md.get(key)
    if names:
      return tuple(names)
  return None


def _is_var(x: Any) -> bool:
  return isinstance(x, nnx.Variable)


def state_shardings(state: Any, mesh: Mesh, rules: Mapping[str, Any]) -> Any:
  """NamedShardings for an nnx State (concrete or abstract) from its logical-axis metadata.

  The result has the state's tree structure, so it can be passed to `jax.device_put`, to
  `jax.jit(..., in_shardings=/out_shardings=)` and as orbax restore targets.
  """

  def one(x):
    if _is_var(x):
      value = x.get_value()
      spec = logical_to_spec(variable_logical_axes(x), np.shape(value), mesh, rules)
      return x.replace(NamedSharding(mesh, spec))
    return NamedSharding(mesh, PartitionSpec())

  return jax.tree.map(one, state, is_leaf=_is_var)


def state_specs(state: Any, mesh: Mesh, rules: Mapping[str, Any]) -> Any:
  """Like state_shardings but PartitionSpecs (for shard_map and debugging)."""
  return jax.tree.map(lambda s: s.spec, state_shardings(state, mesh, rules))


def place(tree: Any, shardings: Any) -> Any:
  """Put arrays (identical on every process) onto their shardings."""
  return jax.device_put(tree, shardings)


def shard_model(model: nnx.Module, mesh: Mesh, rules: Mapping[str, Any]) -> nnx.Module:
  """Move an existing model's state onto the mesh (in place) and return it."""
  state = nnx.state(model)
  nnx.update(model, place(state, state_shardings(state, mesh, rules)))
  return model


def init_sharded(
  make_model: Callable[[], nnx.Module], mesh: Mesh, rules: Mapping[str, Any]
) -> nnx.Module:
  """Build a model directly in its sharded layout: no host ever holds the full parameters.

  `make_model` builds the module (e.g. `lambda: Decoder(cfg, rngs=nnx.Rngs(0))`); it is traced
  once abstractly for the shardings, then run under jit with those as out_shardings.
  """

  def build():
    with nnx.use_eager_sharding(False):
      return make_model()

  abstract = nnx.eval_shape(build)
  graphdef, abs_state = nnx.split(abstract)
  shardings = state_shardings(abs_state, mesh, rules)

  @jax.jit
  def init():
    return nnx.state(build())

  with jax.set_mesh(mesh):
    state = jax.jit(init, out_shardings=shardings)()
  return nnx.merge(graphdef, state)


def abstract_state(
  make_model: Callable[[], nnx.Module], mesh: Mesh, rules: Mapping[str, Any]
) -> tuple[Any, Any]:
  """(graphdef, state of ShapeDtypeStructs carrying shardings): restore targets for orbax."""

  def build():
    with nnx.use_eager_sharding(False):
      return make_model()

  graphdef, abs_state = nnx.split(nnx.eval_shape(build))
  shardings = state_shardings(abs_state, mesh, rules)
  return graphdef, with_shardings(abs_state, shardings)


def with_shardings(abs_tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `abs_tree` (arrays or structs) annotated with `shardings`."""
  return jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(np.shape(a), a.dtype, sharding=s), abs_tree, shardings
  )


def _path_keys(path) -> tuple:
  out = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        out.append(getattr(k, attr))
        break
    else:
      out.append(str(k))
  return tuple(out)


def opt_state_shardings(opt_state: Any, params: Any, param_shardings: Any, mesh: Mesh) -> Any:
  """Shardings for an optax (or nnx.Optimizer) state: moments follow their parameter.

  A leaf of the optimizer state whose tree path ends with a parameter's path and has that
  parameter's shape gets the parameter's sharding (Adam's mu/nu); anything else (step counts,
  schedule states) is replicated.
  """
  by_path: dict[tuple, tuple[tuple, NamedSharding]] = {}
  p_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  s_leaves = jax.tree.leaves(param_shardings)
  if len(p_leaves) != len(s_leaves):
    raise ValueError("params and param_shardings have different structures")
  for (path, leaf), sh in zip(p_leaves, s_leaves):
    by_path[_path_keys(path)] = (np.shape(leaf), sh)
  replicated = NamedSharding(mesh, PartitionSpec())

  def one(path, leaf):
    keys = _path_keys(path)
    for start in range(len(keys)):
      hit = by_path.get(keys[start:])
      if hit is not None and hit[0] == np.shape(leaf):
        return hit[1]
    return replicated

  return jax.tree_util.tree_map_with_path(one, opt_state)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_axes(mesh: Mesh, rules: Mapping[str, Any]) -> tuple[str, ...]:
  return tuple(a for a in _as_tuple(rules.get("batch", ("data", "fsdp"))) if a in mesh.shape)


def batch_sharding(mesh: Mesh, rules: Mapping[str, Any], ndim: int = 2) -> NamedSharding:
  """Leading (batch) dimension split over the batch mesh axes, the rest replicated."""
  axes = batch_axes(mesh, rules)
  lead = None if not axes else axes[0] if len(axes) == 1 else axes
  return NamedSharding(mesh, PartitionSpec(lead, *([None] * (ndim - 1))))


def batch_divisor(mesh: Mesh, rules: Mapping[str, Any]) -> int:
  """The global batch must be a multiple of this (devices along the batch axes)."""
  return math.prod(mesh.shape[a] for a in batch_axes(mesh, rules))


def shard_batch(
  batch: Mapping[str, np.ndarray], mesh: Mesh, rules: Mapping[str, Any], name: str = "batch"
) -> dict[str, jax.Array]:
  """Global arrays from each process's share of the batch (rows = local batch).

  Every process passes its own rows; the global batch is their concatenation in process order.
  Raises UserError naming the field when the global batch does not split over the batch axes.
  """
  div = batch_divisor(mesh, rules)
  out = {}
  for key, local in batch.items():
    local = np.asarray(local)
    if local.ndim == 0:
      out[key] = jax.device_put(local, replicated(mesh))
      continue
    global_rows = local.shape[0] * jax.process_count()
    if global_rows % div:
      raise UserError(
        f"{name}[{key!r}]: global batch {global_rows} is not divisible by the "
        f"{div} devices of mesh axes {batch_axes(mesh, rules)}"
      )
    sh = batch_sharding(mesh, rules, local.ndim)
    global_shape = (global_rows,) + local.shape[1:]
    out[key] = jax.make_array_from_process_local_data(sh, local, global_shape)
  return out


def tree_shardings_by_axes(
  tree: Any,
  mesh: Mesh,
  rules: Mapping[str, Any],
  axes_for: Callable[[tuple, Any], Sequence[str | None] | None],
) -> Any:
  """Shardings for any pytree given a function (path, leaf) -> logical axes (or None).

  Used for the KV cache, e.g. `axes_for = lambda p, x: ("batch", "length", "kv_heads",
  "head_dim") if x.ndim == 4 else None`.
  """

  def one(path, leaf):
    logical = axes_for(_path_keys(path), leaf)
    return NamedSharding(mesh, logical_to_spec(logical, np.shape(leaf), mesh, rules))

  return jax.tree_util.tree_map_with_path(one, tree)


def kv_cache_axes(path: tuple, leaf: Any) -> tuple | None:
  """Default logical axes of KV-cache leaves (models/decoder.py KVCache): keys [batch, kv_heads,
  head_dim, length], values [batch, length, kv_heads, head_dim] (4-D), with an optional leading
  layer axis (5-D); per-row positions/lengths are [batch]."""
  nd = np.ndim(leaf)
  if nd in (4, 5):
    keys = bool(path) and str(path[0]) == "keys"
    axes = (
      ("batch", "kv_heads", "head_dim", "length")
      if keys
      else ("batch", "length", "kv_heads", "head_dim")
    )
    return (None,) * (nd - 4) + axes
  if nd in (1, 2) and "index" not in str(path[-1] if path else ""):
    return ("batch",) + (None,) * (nd - 1)
  return None


def constrain(
  x: jax.Array, logical: Sequence[str | None], mesh: Mesh, rules: Mapping[str, Any]
) -> jax.Array:
  """with_sharding_constraint by logical names (activations inside jitted functions)."""
  spec = logical_to_spec(logical, x.shape, mesh, rules)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def describe(mesh: Mesh) -> str:
  return " x ".join(f"{a}={mesh.shape[a]}" for a in mesh.axis_names)
