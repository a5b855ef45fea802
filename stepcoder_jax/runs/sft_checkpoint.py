"""Resumable SFT: the loop's state in an orbax checkpoint under `<out>/checkpoints/`.

A long SFT run (hours on CPU) must survive a kill: every `sft.save_every` steps, and at each new
best validation NLL, the loop saves its parameters, optimizer state, step and a JSON of host state
(losses, validation history, early-stop counters, the initial NLLs) with the project's
`Checkpointer` (atomic finalize, one step kept). Everything else is recomputed: the batch order is
a pure function of (example count, batch size, seed), and its prefix does not depend on
`sft.steps`, so a resumed run feeds the remaining batches of the uninterrupted one.

A checkpoint is only valid for the run that wrote it: its fingerprint (the SFTConfig fields that
shape the trajectory, the example count and a hash of their tokens, the shapes, the model config)
must match, otherwise resuming would silently mix two runs. The fields in `MAY_CHANGE` do not
change the trajectory of the steps already taken and may differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

import jax

from stepcoder_jax import checkpoint as ckpt_lib
from stepcoder_jax.config import CheckpointConfig
from stepcoder_jax.errors import UserError
from stepcoder_jax.runs.train_settings import differences

_log = logging.getLogger(__name__)

# SFTConfig fields a resumed run may change: the step limit (the batch order's prefix does not
# depend on it), logging and checkpoint cadence, and how long to wait for an improvement.
MAY_CHANGE = ("steps", "log_every", "save_every", "patience")
ITEMS = ("params", "opt")


def _digest(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(
  cfg,
  model_cfg,
  examples: Sequence,
  val_examples: Sequence,
  shapes: tuple[int, int],
  statements: str | None,
) -> dict:
  """What must be equal between the run that saved a checkpoint and the one resuming it."""
  fp = {f"sft.{k}": v for k, v in dataclasses.asdict(cfg).items() if k not in MAY_CHANGE}
  fp.update(
    {
      "examples": len(examples),
      "val_examples": len(val_examples),
      "example_tokens": _digest([(e.prompt_ids, e.target_ids) for e in examples]),
      "val_example_tokens": _digest([(e.prompt_ids, e.target_ids) for e in val_examples]),
      "shapes": list(shapes),
      "cccs.statements": statements,
      "model_config": _digest(dataclasses.asdict(model_cfg)),
    }
  )
  return json.loads(json.dumps(fp, default=str))  # as it reads back from the checkpoint


def check_fingerprint(saved: dict, now: dict, directory: Path) -> None:
  """A one-line UserError naming the first field that differs."""
  for key in differences(saved, now)[:1]:
    raise UserError(
      f"sft: {directory} was saved by a run with {key}={saved.get(key)!r}, this "
      f"run has {now.get(key)!r}; use a new --out or delete {directory}"
    )


class SFTCheckpoints:
  """The one checkpoint of an SFT run in `<out_dir>/checkpoints/` (synchronous saves).

  Synchronous, so that a save is on disk before the best model's HF files are rewritten: the
  loop relies on that order (see `train_sft`).
  """

  def __init__(self, out_dir: str | Path, fp: dict):
    self.directory = ckpt_lib.checkpoint_dir(out_dir)
    self.fingerprint = fp
    cfg = CheckpointConfig(save_interval_steps=1, max_to_keep=1, async_save=False)
    self._ckpt = ckpt_lib.Checkpointer(self.directory, cfg, items=ITEMS)

  def restore(self, params, opt_state) -> tuple[Any, Any, dict] | None:
    """(params, opt_state, host state) of the latest checkpoint, or None without one.

    `params` (an nnx State) and `opt_state` are the targets: their shapes and shardings.
    """
    step = self._ckpt.latest_step()
    if step is None:
      return None
    try:
      check_fingerprint(
        self._ckpt.read_meta(step).get("fingerprint", {}), self.fingerprint, self.directory
      )
    except UserError:
      self.close()
      raise
    leaves, treedef = jax.tree.flatten(opt_state)
    trees, meta = self._ckpt.restore(step, {"params": params, "opt": _numbered(leaves)})
    opt = jax.tree.unflatten(treedef, [trees["opt"][k] for k in _numbered(leaves)])
    return trees["params"], opt, meta["host"]

  def save(self, step: int, params, opt_state, host: dict) -> None:
    leaves = jax.tree.leaves(opt_state)
    self._ckpt.save(
      step,
      {"params": params, "opt": _numbered(leaves)},
      meta={"fingerprint": self.fingerprint, "host": host},
      force=True,
    )

  def close(self) -> None:
    self._ckpt.close()

  def remove(self) -> None:
    """Close and delete the checkpoints: the finished run's HF directory is the result."""
    self.close()
    shutil.rmtree(self.directory, ignore_errors=True)


def _numbered(leaves: list) -> dict[str, Any]:
  return {f"{i:05d}": x for i, x in enumerate(leaves)}
