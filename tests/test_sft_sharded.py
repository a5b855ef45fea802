"""Sharded SFT: the SFT step on the PPO step's mesh and logical-axis rules, on 8 simulated CPU
devices, equals the same run on one device, and its state really is split.

The device count of a process is fixed when jax starts, so the 8-device run is a child process
(this file run as a script with XLA_FLAGS set); the rest of the suite keeps its single device.
Tolerance (float32): three AdamW steps at lr 1e-3 from the same start; the meshes differ only in
reduction order (measured: loss 8e-8, parameters 5e-5 of the largest parameter, where Adam's
first steps turn rounding in near-zero gradients into up to lr-sized moves). A wrong split (rows
lost or counted twice, a moment on the wrong shard) moves parameters by ~lr: the 3 steps moved
them by 4e-2 of the largest.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MESHES = [(2, 2, 2)]  # data, fsdp and tensor all split


@pytest.mark.slow
def test_sharded_sft_equals_one_device_and_splits_the_state():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, __file__], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT
  )
  assert out.returncode == 0, out.stderr[-4000:]
  lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
  rows = {tuple(r["mesh"]): r for r in lines if "mesh" in r}
  assert sorted(rows) == sorted(MESHES)
  # A batch that does not split over the batch axes: one line naming the field and the mesh.
  error = next(r["error"] for r in lines if "error" in r)
  assert error.startswith("sft.batch_size: 3 rows do not split over the 4 devices"), error
  for mesh, r in rows.items():
    assert r["loss_max_rel_diff"] < 1e-5, (mesh, r)
    assert r["params_max_rel_diff"] < 5e-4, (mesh, r)
    assert r["moved"] > 1e-4, (mesh, r)  # the steps changed the parameters: not a no-op compared
  # Tiny llama with the tiny tokenizer: vocab 384 x hidden 64 embedding; q_proj [64, 4 heads,
  # 16]. FSDP splits embed, tensor splits heads and vocab; Adam's moments follow their parameter.
  assert rows[(2, 2, 2)]["shards"] == {
    "embed": [192, 32],
    "q_proj": [32, 2, 16],
    "mu_q_proj": [32, 2, 16],
  }


def _child():
  import jax
  from flax import nnx

  from stepcoder_jax.config import MeshConfig
  from stepcoder_jax.data.builders.stepcoder_builtin import read_builtin
  from stepcoder_jax.models.loading import load_model
  from stepcoder_jax.runs import sft
  from stepcoder_jax.runs.config import SFTConfig

  assert jax.device_count() == 8, jax.devices()
  probs = [
    dataclasses.replace(p, question=p.question[:60])
    for p in read_builtin()
    if p.test_kind == "call"
  ][:8]
  cfg = SFTConfig(
    steps=3, batch_size=8, learning_rate=1e-3, warmup_steps=0, nll_examples=0, cccs_stages=False
  )

  def run(mesh_cfg, devices, cfg=cfg):
    _, model, tok = load_model("tiny-llama")
    start = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    summary = sft.train_sft(
      model, tok, probs, cfg, None, progress=False, mesh_cfg=mesh_cfg, devices=devices
    )[1]
    state = nnx.state(model, nnx.Param)
    layer = state["layers"][0]["attn"]["q_proj"]
    shards = {
      "embed": list(state["embed"][...].addressable_shards[0].data.shape),
      "q_proj": list(layer[...].addressable_shards[0].data.shape),
    }
    return {
      "loss": summary["last_loss"],
      "shards": shards,
      "start": start,
      "params": [np.asarray(x) for x in jax.tree.leaves(state)],
    }

  def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))

  one = run(MeshConfig(1, 1, 1), jax.devices()[:1])
  for shape in MESHES:
    r = run(MeshConfig(*shape), jax.devices())
    # The optimizer state's split: seen through a fresh placement of the same rules.
    _, model, _ = load_model("tiny-llama")
    _, params, rest = nnx.split(model, nnx.Param, ...)
    tx = sft.make_optimizer(cfg)
    placed = sft._place(MeshConfig(*shape), jax.devices(), cfg, params, tx.init(params), rest)
    mu = placed.arrays[1][1][0].mu["layers"][0]["attn"]["q_proj"]
    r["shards"]["mu_q_proj"] = list(mu[...].addressable_shards[0].data.shape)
    print(
      json.dumps(
        {
          "mesh": shape,
          "shards": r["shards"],
          "loss_max_rel_diff": rel(r["loss"], one["loss"]),
          "params_max_rel_diff": max(rel(a, b) for a, b in zip(r["params"], one["params"])),
          "moved": max(rel(a, b) for a, b in zip(one["params"], one["start"])),
        }
      )
    )
  from stepcoder_jax.errors import UserError

  try:
    run(MeshConfig(2, 2, 2), jax.devices(), dataclasses.replace(cfg, batch_size=3))
  except UserError as e:
    print(json.dumps({"error": str(e)}))


if __name__ == "__main__":
  _child()
