"""Mesh, logical-axis rules and placement, on 8 simulated CPU devices.

The device count of a process is fixed when jax starts, so the 8-device checks run in a child
process (this file run as a script with XLA_FLAGS set); the other tests of the suite keep their
single device. The child prints one JSON line per mesh that the tests below check.
"""

import json
import os
import subprocess
import sys

import pytest

from stepcoder_jax.config import MeshConfig
from stepcoder_jax.errors import UserError

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8)]


def test_mesh_shape_fill_and_errors():
  from stepcoder_jax import sharding

  assert sharding.mesh_shape(MeshConfig(data=2, fsdp=-1, tensor=2), 8) == (2, 2, 2)
  assert sharding.mesh_shape(MeshConfig(data=-1, fsdp=1, tensor=1), 4) == (4, 1, 1)
  with pytest.raises(UserError, match="has 4 devices but 8 are available"):
    sharding.mesh_shape(MeshConfig(data=2, fsdp=2, tensor=1), 8)
  with pytest.raises(UserError, match="do not divide the 8 devices"):
    sharding.mesh_shape(MeshConfig(data=3, fsdp=-1, tensor=1), 8)
  with pytest.raises(UserError, match="at most one axis may be -1"):
    sharding.mesh_shape(MeshConfig(data=-1, fsdp=-1, tensor=1), 8)
  with pytest.raises(UserError, match="unknown mesh axis 'model'"):
    sharding.make_rules((("embed", "model"),))


def test_distributed_init_is_a_no_op_for_one_process(monkeypatch):
  from stepcoder_jax import sharding
  from stepcoder_jax.config import DistributedConfig

  for k in (
    "JAX_COORDINATOR_ADDRESS",
    "JAX_NUM_PROCESSES",
    "JAX_PROCESS_ID",
    "SLURM_NTASKS",
    "OMPI_COMM_WORLD_SIZE",
  ):
    monkeypatch.delenv(k, raising=False)
  assert sharding.distributed_init(DistributedConfig()) is False
  assert sharding.distributed_init(DistributedConfig(initialize="never")) is False
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
  with pytest.raises(UserError, match="JAX_NUM_PROCESSES"):
    sharding.distributed_init(DistributedConfig())
  with pytest.raises(UserError, match="auto|always|never"):
    sharding.distributed_init(DistributedConfig(initialize="sometimes"))


def test_logical_to_spec_rules():
  import numpy as np
  from jax.sharding import PartitionSpec as P
  from stepcoder_jax import sharding

  class FakeMesh:  # logical_to_spec only reads axis sizes
    shape = {"data": 2, "fsdp": 2, "tensor": 4}

  rules = sharding.make_rules()
  spec = sharding.logical_to_spec(("embed", "heads", "head_dim"), (64, 8, 16), FakeMesh, rules)
  assert spec == P("fsdp", "tensor")
  # 2 kv heads do not split over tensor=4: replicated rather than a compile error.
  assert sharding.logical_to_spec(
    ("embed", "kv_heads", "head_dim"), (64, 2, 16), FakeMesh, rules
  ) == P("fsdp")
  assert sharding.logical_to_spec(("batch", None), (8, 5), FakeMesh, rules) == P(("data", "fsdp"))
  assert sharding.logical_to_spec(("batch", None), (2, 5), FakeMesh, rules) == P("data")
  assert sharding.logical_to_spec(("norm",), (64,), FakeMesh, rules) == P()
  del np


@pytest.fixture(scope="module")
def eight_device_results():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, __file__], capture_output=True, text=True, env=env, timeout=600
  )
  assert out.returncode == 0, out.stderr[-4000:]
  rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
  return {tuple(r["mesh"]): r for r in rows}


@pytest.mark.slow
def test_params_really_split(eight_device_results):
  r = eight_device_results
  # tiny llama: vocab 300, hidden 64, 4 heads, 2 kv heads, head_dim 16, mlp 128.
  assert r[(8, 1, 1)]["shard_shapes"]["embed"] == [300, 64]
  assert r[(2, 4, 1)]["shard_shapes"] == {
    "embed": [300, 16],
    "q_proj": [16, 4, 16],
    "k_proj": [16, 2, 16],
    "o_proj": [4, 16, 16],
    "gate_proj": [16, 128],
    "down_proj": [128, 16],
    "norm": [64],
  }
  assert r[(2, 2, 2)]["shard_shapes"] == {
    "embed": [150, 32],
    "q_proj": [32, 2, 16],
    "k_proj": [32, 1, 16],
    "o_proj": [2, 16, 32],
    "gate_proj": [32, 64],
    "down_proj": [64, 32],
    "norm": [64],
  }
  # tensor=8: heads (4) and vocab (300) do not divide, so they stay whole; mlp (128) splits.
  assert r[(1, 1, 8)]["shard_shapes"]["q_proj"] == [64, 4, 16]
  assert r[(1, 1, 8)]["shard_shapes"]["gate_proj"] == [64, 16]
  # KV cache keys [batch 8, kv_heads 2, head_dim 16, length 16]: batch over data x fsdp, heads
  # over tensor when it divides them.
  assert r[(2, 2, 2)]["cache_keys_shard"] == [2, 1, 16, 16]
  assert r[(2, 4, 1)]["cache_keys_shard"] == [1, 2, 16, 16]
  assert r[(1, 1, 8)]["cache_keys_shard"] == [8, 2, 16, 16]
  assert r[(2, 2, 2)]["cache_valid_shard"] == [2, 16]
  for row in r.values():
    assert row["opt_mu_sharding_matches_param"]
    assert row["batch_shard_rows"] == 8 // (row["mesh"][0] * row["mesh"][1])


@pytest.mark.slow
@pytest.mark.parametrize("mesh", MESHES)
def test_sharded_equals_unsharded(eight_device_results, mesh):
  r = eight_device_results[mesh]
  assert r["init_max_abs_diff"] < 1e-6  # same RNG; jit may fuse the init scaling differently
  assert r["forward_max_rel_diff"] < 1e-5
  assert r["decode_max_rel_diff"] < 1e-5
  assert r["loss_rel_diff"] < 1e-5
  assert r["updated_params_max_rel_diff"] < 1e-5


# ---------------------------------------------------------------------------------------------
# Child process


def _child():
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx

  from stepcoder_jax import sharding
  from stepcoder_jax.models.config import ModelConfig
  from stepcoder_jax.models.decoder import Decoder, left_pad_positions

  assert jax.device_count() == 8, jax.devices()
  cfg = ModelConfig.tiny("llama")
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, cfg.vocab_size, (8, 12)).astype(np.int32)
  mask = np.ones((8, 12), bool)
  mask[:3, :4] = False  # left padding on some rows
  positions = np.asarray(left_pad_positions(jnp.asarray(mask)))
  batch_np = {"tokens": tokens, "positions": positions, "attention_mask": mask}
  # SGD with momentum: its trace mirrors the params (so opt-state sharding is exercised), and
  # unlike Adam's first step (~lr * sign(g)) it does not blow up float noise in near-zero grads.
  tx = optax.sgd(1e-1, momentum=0.9)

  def forward(state, graphdef, b):
    h, _ = nnx.merge(graphdef, state)(b["tokens"], b["positions"], b["attention_mask"])
    return h

  def loss_fn(params, rest, graphdef, b):
    h = forward(nnx.merge_state(params, rest), graphdef, b)
    w = b["attention_mask"][..., None]
    return jnp.sum(jnp.square(h) * w) / jnp.sum(w)

  def train_step(params, rest, opt_state, graphdef, b):
    loss, g = jax.value_and_grad(loss_fn)(params, rest, graphdef, b)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def decode(state, graphdef, b):
    m = nnx.merge(graphdef, state)
    cache = m.init_cache(8, 16)
    _, cache = m(b["tokens"], b["positions"], b["attention_mask"], cache)
    nxt = b["tokens"][:, -1:]
    h, _ = m(nxt, b["positions"][:, -1:] + 1, jnp.ones_like(nxt, bool), cache)
    return h

  def run(model, mesh=None, rules=None):
    graphdef, state = nnx.split(model)
    params, rest = nnx.split_state(state, nnx.Param, ...)
    opt_state = tx.init(params)
    if mesh is None:
      b = {k: jnp.asarray(v) for k, v in batch_np.items()}
      f = jax.jit(forward, static_argnums=1)
      d = jax.jit(decode, static_argnums=1)
      t = jax.jit(train_step, static_argnums=3)
    else:
      b = sharding.shard_batch(batch_np, mesh, rules)
      s_state = sharding.state_shardings(state, mesh, rules)
      s_params = sharding.state_shardings(params, mesh, rules)
      s_rest = sharding.state_shardings(rest, mesh, rules)
      s_opt = sharding.opt_state_shardings(opt_state, params, s_params, mesh)
      opt_state = sharding.place(opt_state, s_opt)
      s_b = {k: v.sharding for k, v in b.items()}
      f = jax.jit(forward, static_argnums=1, in_shardings=(s_state, s_b))
      d = jax.jit(decode, static_argnums=1, in_shardings=(s_state, s_b))
      t = jax.jit(
        train_step,
        static_argnums=3,
        in_shardings=(s_params, s_rest, s_opt, s_b),
        out_shardings=(s_params, s_opt, sharding.replicated(mesh)),
      )
    h = f(state, graphdef, b)
    hd = d(state, graphdef, b)
    new_params, new_opt, loss = t(params, rest, opt_state, graphdef, b)
    return h, hd, new_params, new_opt, loss

  ref_model = Decoder(cfg, rngs=nnx.Rngs(0))
  ref = run(ref_model)
  ref_params = nnx.state(ref_model, nnx.Param)

  def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))

  for shape in MESHES:
    from stepcoder_jax.config import MeshConfig

    mesh = sharding.make_mesh(MeshConfig(*shape))
    rules = sharding.make_rules()
    model = sharding.init_sharded(lambda: Decoder(cfg, rngs=nnx.Rngs(0)), mesh, rules)
    params = nnx.state(model, nnx.Param)
    init_diff = max(
      float(np.max(np.abs(np.asarray(a) - np.asarray(b2))))
      for a, b2 in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params))
    )
    blk = model.layers[0]
    shards = {
      "embed": model.embed,
      "q_proj": blk.attn.q_proj,
      "k_proj": blk.attn.k_proj,
      "o_proj": blk.attn.o_proj,
      "gate_proj": blk.mlp.gate_proj,
      "down_proj": blk.mlp.down_proj,
      "norm": blk.input_norm.scale,
    }
    shard_shapes = {k: list(v[...].addressable_shards[0].data.shape) for k, v in shards.items()}
    h, hd, new_params, new_opt, loss = run(model, mesh, rules)
    mu = new_opt[0].trace
    mu_ok = all(
      m.sharding == p.sharding for m, p in zip(jax.tree.leaves(mu), jax.tree.leaves(new_params))
    )
    upd = max(rel(a, b2) for a, b2 in zip(jax.tree.leaves(new_params), jax.tree.leaves(ref[2])))
    b = sharding.shard_batch(batch_np, mesh, rules)
    abs_cache = jax.eval_shape(lambda m=model: m.init_cache(8, 16))  # this iteration's model
    cache_sh = sharding.tree_shardings_by_axes(abs_cache, mesh, rules, sharding.kv_cache_axes)
    print(
      json.dumps(
        {
          "cache_keys_shard": list(cache_sh.keys[0].shard_shape(abs_cache.keys[0].shape)),
          "cache_valid_shard": list(cache_sh.valid.shard_shape(abs_cache.valid.shape)),
          "mesh": shape,
          "shard_shapes": shard_shapes,
          "init_max_abs_diff": init_diff,
          "forward_max_rel_diff": rel(h, ref[0]),
          "decode_max_rel_diff": rel(hd, ref[1]),
          "loss_rel_diff": rel(loss, ref[4]),
          "updated_params_max_rel_diff": upd,
          "opt_mu_sharding_matches_param": mu_ok,
          "batch_shard_rows": b["tokens"].addressable_shards[0].data.shape[0],
        }
      ),
      flush=True,
    )


if __name__ == "__main__":
  _child()
