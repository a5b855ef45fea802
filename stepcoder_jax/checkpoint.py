"""Orbax checkpoints of a training run: model and optimizer states plus the host-side state.

Layout under `<workdir>/checkpoints/`:
  <step>/<item>/...         one orbax item per array tree (policy, value, opt states ...)
  <step>/meta/...           JSON: step, RNG key data, curriculum state, data position, gin text
  model_config.json         the policy's ModelConfig (for generate / export without gin)
  tokenizer/                the tokenizer files (save_pretrained)

Why orbax: saves are asynchronous (training continues while arrays stream to disk), every host
writes only its own shards, and a step becomes visible only after an atomic finalize (a
directory `<step>.orbax-checkpoint-tmp` is renamed to `<step>`), so a run killed mid-save resumes
from the previous complete step. Restoring takes target shardings, so a checkpoint saved on one
mesh restores onto another (resharding), or onto a single device for inference.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from stepcoder_jax.config import CheckpointConfig
from stepcoder_jax.errors import UserError

log = logging.getLogger(__name__)

META = "meta"
DEFAULT_ITEMS = ("policy", "value", "policy_opt", "value_opt")
MODEL_CONFIG_FILE = "model_config.json"
TOKENIZER_DIR = "tokenizer"


def checkpoint_dir(workdir: str | Path) -> Path:
  return Path(workdir) / "checkpoints"


def _to_tree(x: Any) -> Any:
  """nnx States become plain nested dicts of arrays (what orbax stores)."""
  if isinstance(x, nnx.State):
    return nnx.to_pure_dict(x)
  return x


def rng_to_json(key: jax.Array) -> dict:
  """A jax PRNG key (typed or raw uint32) as JSON-able data."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    impl = str(jax.random.key_impl(key))
    data = np.asarray(jax.random.key_data(key))
    return {"typed": True, "impl": impl, "data": data.tolist()}
  return {"typed": False, "data": np.asarray(key).tolist()}


def rng_from_json(d: Mapping) -> jax.Array:
  data = np.asarray(d["data"], dtype=np.uint32)
  if d.get("typed"):
    return jax.random.wrap_key_data(data, impl=d.get("impl") or None)
  return jax.numpy.asarray(data)


class Checkpointer:
  """Save / restore a run's state with an orbax CheckpointManager.

  Args:
    directory: where the steps go (usually `checkpoint_dir(workdir)`).
    cfg: CheckpointConfig (interval, how many to keep, async).
    items: names of the array trees this run saves (fixed per run, so restore knows them).
  """

  def __init__(
    self, directory: str | Path, cfg: CheckpointConfig, items: Sequence[str] = DEFAULT_ITEMS
  ):
    self.cfg = cfg
    self.directory = Path(directory).absolute()
    if META in items:
      raise ValueError(f"item name {META!r} is reserved")
    self.items = tuple(items)
    handlers = {name: ocp.StandardCheckpointHandler() for name in self.items}
    handlers[META] = ocp.JsonCheckpointHandler()
    options = ocp.CheckpointManagerOptions(
      save_interval_steps=max(1, self.cfg.save_interval_steps),
      max_to_keep=self.cfg.max_to_keep if self.cfg.max_to_keep > 0 else None,
      keep_period=self.cfg.keep_period or None,
      enable_async_checkpointing=self.cfg.async_save,
      create=True,
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

  # --- saving -------------------------------------------------------------------------------

  def should_save(self, step: int) -> bool:
    return self.manager.should_save(step)

  def save(
    self,
    step: int,
    trees: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
    *,
    force: bool = False,
  ) -> bool:
    """Save array trees (nnx States or pytrees of arrays) and JSON metadata at `step`.

    `meta` holds the host-side state: RNG (see rng_to_json), curriculum JSON, data position,
    the operative gin config text, anything JSON-able. Returns whether a save started (the
    interval policy may skip the step unless force). Asynchronous: call wait() before reading.
    """
    unknown = set(trees) - set(self.items)
    if unknown:
      raise ValueError(f"checkpoint items {sorted(unknown)} not declared in {self.items}")
    args = {name: ocp.args.StandardSave(_to_tree(t)) for name, t in trees.items()}
    meta = dict(meta or {})
    meta.setdefault("step", int(step))
    meta["items"] = sorted(trees)
    args[META] = ocp.args.JsonSave(meta)
    return bool(self.manager.save(step, args=ocp.args.Composite(**args), force=force))

  def wait(self) -> None:
    """Block until pending asynchronous saves are finalized."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  # --- restoring ----------------------------------------------------------------------------

  def latest_step(self) -> int | None:
    """The newest finalized step (unfinished temporary directories are ignored)."""
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def read_meta(self, step: int | None = None) -> dict:
    step = self._step(step)
    out = self.manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))
    return dict(out[META])

  def restore(
    self,
    step: int | None = None,
    targets: Mapping[str, Any] | None = None,
    *,
    names: Sequence[str] | None = None,
    default_sharding: jax.sharding.Sharding | None = None,
  ) -> tuple[dict, dict]:
    """Restore array trees and metadata; returns (trees, meta).

    Args:
      step: the step (default: the latest).
      targets: per item, an abstract tree giving shapes, dtypes and *target shardings*: an nnx
        State of ShapeDtypeStructs (sharding.abstract_state), a concrete State/pytree of arrays
        (their shardings are used), or a pytree of ShapeDtypeStructs. Resharding onto a
        different mesh happens here. nnx States come back as nnx States.
      names: items to restore (default: the targets' names, else every item saved at step).
      default_sharding: for items without a target (default: the first local device).
    """
    step = self._step(step)
    meta = self.read_meta(step)
    targets = dict(targets or {})
    names = list(names if names is not None else (targets or meta.get("items", self.items)))
    saved = set(meta.get("items", self.items))
    missing = [n for n in names if n not in saved]
    if missing:
      raise UserError(
        f"{self.directory}/{step}: checkpoint has no item(s) {missing}; it holds {sorted(saved)}"
      )
    default_sharding = default_sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    args = {}
    for name in names:
      target = targets.get(name)
      if target is None:
        abstract = self._abstract_from_metadata(step, name, default_sharding)
      else:
        abstract = _abstract(_to_tree(target))
      args[name] = ocp.args.StandardRestore(abstract)
    restored = self.manager.restore(step, args=ocp.args.Composite(**args))
    trees = {}
    for name in names:
      tree = restored[name]
      target = targets.get(name)
      if isinstance(target, nnx.State):
        state = jax.tree.map(lambda x: x, target, is_leaf=lambda x: isinstance(x, nnx.Variable))
        nnx.replace_by_pure_dict(state, tree)
        tree = state
      trees[name] = tree
    return trees, meta

  def _step(self, step: int | None) -> int:
    if step is None:
      step = self.latest_step()
      if step is None:
        raise UserError(f"{self.directory}: no finished checkpoint to restore")
    elif step not in self.manager.all_steps():
      raise UserError(f"{self.directory}: no checkpoint for step {step}; have {self.all_steps()}")
    return step

  def _abstract_from_metadata(self, step: int, name: str, sharding: jax.sharding.Sharding) -> Any:
    md = self.manager.item_metadata(step)[name]
    tree = getattr(md, "tree", md)
    return jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding),
      tree,
      is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
    )


def _abstract(tree: Any) -> Any:
  """ShapeDtypeStructs with the shardings of the given arrays / structs."""

  def one(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return x
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None))

  return jax.tree.map(one, tree)


# --------------------------------------------------------------------------------------------
# Inference assets: enough to rebuild the policy without the run's gin config.


def save_inference_assets(directory: str | Path, model_config: Any, tokenizer: Any = None) -> None:
  """Write the policy's ModelConfig (JSON) and tokenizer files next to the steps (process 0)."""
  if jax.process_index() != 0:
    return
  d = Path(directory)
  d.mkdir(parents=True, exist_ok=True)
  cfg = dataclasses.asdict(model_config)
  tmp = d / (MODEL_CONFIG_FILE + ".tmp")
  tmp.write_text(json.dumps(cfg, indent=1, sort_keys=True))
  tmp.replace(d / MODEL_CONFIG_FILE)
  if tokenizer is not None:
    tokenizer.save_pretrained(str(d / TOKENIZER_DIR))


def _tuples(x: Any) -> Any:
  """JSON lists back to the tuples a frozen, hashable ModelConfig needs."""
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def load_model_config(directory: str | Path):
  from stepcoder_jax.models.config import ModelConfig

  path = Path(directory) / MODEL_CONFIG_FILE
  if not path.is_file():
    raise UserError(f"{path}: missing; not a stepcoder_jax checkpoint directory")
  try:
    raw = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(raw) - fields)
    if unknown:
      raise UserError(f"{path}: unknown ModelConfig field(s) {unknown}")
    return ModelConfig(**{k: _tuples(v) for k, v in raw.items()})
  except (json.JSONDecodeError, TypeError, ValueError) as e:
    raise UserError(f"{path}: bad model config: {e}") from None


def find_checkpoint_dir(path: str | Path) -> Path:
  """Accept a workdir (with checkpoints/) or the checkpoints directory itself."""
  p = Path(path)
  if (p / MODEL_CONFIG_FILE).is_file():
    return p
  if (p / "checkpoints" / MODEL_CONFIG_FILE).is_file():
    return p / "checkpoints"
  if p.name.isdigit() and (p.parent / MODEL_CONFIG_FILE).is_file():
    return p.parent
  raise UserError(
    f"{p}: no {MODEL_CONFIG_FILE} here or in {p}/checkpoints; "
    "not a stepcoder_jax training directory"
  )


def load_policy_for_inference(path: str | Path, step: int | None = None, item: str = "policy"):
  """(ModelConfig, Decoder, tokenizer or None) from a run's checkpoint, on one device.

  `path` is a workdir, its checkpoints/ directory or a step directory inside it (that step).
  """
  from stepcoder_jax.models.decoder import Decoder

  p = Path(path)
  if step is None and p.name.isdigit() and (p.parent / MODEL_CONFIG_FILE).is_file():
    step = int(p.name)
  d = find_checkpoint_dir(p)
  cfg = load_model_config(d)

  def build():
    with nnx.use_eager_sharding(False):
      return Decoder(cfg, rngs=nnx.Rngs(0))

  graphdef, abs_state = nnx.split(nnx.eval_shape(build))
  one = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=one), abs_state)
  ckpt = Checkpointer(d, CheckpointConfig(async_save=False), items=(item,))
  try:
    trees, _ = ckpt.restore(step, {item: target})
  finally:
    ckpt.close()
  decoder = nnx.merge(graphdef, trees[item])
  tokenizer = None
  if (d / TOKENIZER_DIR).is_dir():
    from stepcoder_jax.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(d / TOKENIZER_DIR)
  return cfg, decoder, tokenizer
