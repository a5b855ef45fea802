"""An evaluation's sampling journal: a killed evaluation resumes without resampling its batches.

Sampling is the slow part of an evaluation (Gemma 3 270M's 4-sample evaluation of 132 problems
takes ~23 min on 2 cores); judging is cheap and can be repeated. After each sampler batch the
journal appends the completion texts of its rows, so a rerun of the SAME evaluation replays the
finished batches and samples only the rest. Batch b is sampled with `fold_in(key(seed), b)`, so a
resumed evaluation ends with exactly the samples an uninterrupted one would have drawn.

"The same evaluation" is the fingerprint: the model's parameters (a per-leaf sum and sum of
squares) and config, the EvalConfig, the mode and every sampled row (row id and prompt ids).
A journal with another fingerprint is discarded and started afresh: a retrained model or changed
settings never reuse old samples.

File `<out>/<name>.journal.jsonl`: line 1 is {"fingerprint": hex}; then one line per batch,
{"phase": "temperature" | "greedy", "batch": b, "completions": {row id: text}}. A line cut by
the kill is dropped when the journal is reopened. The file is deleted once the report is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

_log = logging.getLogger(__name__)


def model_digest(model) -> list[list[float]]:
  """(sum, sum of squares) of every parameter leaf, in float32 on device: cheap, and it changes
  when any training step changes the weights."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  leaves = jax.tree.leaves(nnx.state(model, nnx.Param))

  @jax.jit
  def stats(xs):
    return jnp.stack(
      [
        jnp.stack([jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.square(x.astype(jnp.float32)))])
        for x in xs
      ]
    )

  return jax.device_get(stats(leaves)).tolist()


def fingerprint(model, settings: dict[str, Any], rows: Sequence[tuple[int, Sequence[int]]]) -> str:
  """Hex digest of what decides the samples: the model, `settings` (JSON-able: the EvalConfig,
  the mode) and the (row id, prompt ids) of every row to sample."""
  h = hashlib.sha256()
  h.update(
    json.dumps(
      {
        "model_config": repr(getattr(model, "cfg", None)),
        "params": model_digest(model),
        "settings": settings,
      },
      sort_keys=True,
      default=str,
    ).encode()
  )
  for row_id, ids in rows:
    h.update(json.dumps([row_id, list(ids)]).encode())
  return h.hexdigest()


class Journal:
  """The finished batches of one evaluation; `get` replays one, `record` appends one durably."""

  def __init__(self, path: str | Path, fingerprint_hex: str):
    self.path = Path(path)
    self.fingerprint = fingerprint_hex
    self._done: dict[tuple[str, int], dict[int, str]] = self._load()
    self.resumed = len(self._done)
    if self.resumed:
      _log.info(
        "eval: resuming from %s: %d sampler batch(es) already done", self.path, self.resumed
      )
    # Rewrite the kept lines (dropping one cut by a kill), then append to that clean file.
    self.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = self.path.with_name(self.path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(json.dumps({"fingerprint": self.fingerprint}) + "\n")
      for (phase, batch), texts in self._done.items():
        f.write(_line(phase, batch, texts))
    os.replace(tmp, self.path)
    self._file = open(self.path, "a", encoding="utf-8")

  def _load(self) -> dict[tuple[str, int], dict[int, str]]:
    if not self.path.is_file():
      return {}
    lines = self.path.read_text(encoding="utf-8").split("\n")
    try:
      head = json.loads(lines[0])
    except json.JSONDecodeError:
      head = {}
    if head.get("fingerprint") != self.fingerprint:
      _log.warning(
        "eval: %s belongs to another model or other settings; sampling afresh", self.path
      )
      return {}
    done = {}
    for text in lines[1:]:
      try:
        e = json.loads(text)
        done[(e["phase"], int(e["batch"]))] = {int(k): v for k, v in e["completions"].items()}
      except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        continue  # the line a kill cut short (or the empty string after the last newline)
    return done

  def get(self, phase: str, batch: int) -> dict[int, str] | None:
    """The completions of a batch finished before, or None."""
    return self._done.get((phase, batch))

  def record(self, phase: str, batch: int, texts: dict[int, str]) -> None:
    """Append one finished batch and force it to disk, so a kill right after keeps it."""
    self._done[(phase, batch)] = dict(texts)
    self._file.write(_line(phase, batch, texts))
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self, *, delete: bool = False) -> None:
    self._file.close()
    if delete:
      self.path.unlink(missing_ok=True)


def _line(phase: str, batch: int, texts: dict[int, str]) -> str:
  return (
    json.dumps(
      {"phase": phase, "batch": batch, "completions": {str(k): v for k, v in texts.items()}}
    )
    + "\n"
  )
