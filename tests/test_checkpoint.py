"""Orbax checkpoints: round trip, keep-N, crash safety, resharding, inference loading."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from stepcoder_jax.config import CheckpointConfig
from stepcoder_jax.errors import UserError


def _tiny_state(seed=0):
  import optax
  from flax import nnx
  from stepcoder_jax.models.config import ModelConfig
  from stepcoder_jax.models.decoder import Decoder

  cfg = ModelConfig.tiny("llama")
  model = Decoder(cfg, rngs=nnx.Rngs(seed))
  params = nnx.state(model, nnx.Param)
  tx = optax.adam(1e-2)
  opt = tx.init(params)
  # One real update so the moments are non-zero and worth comparing.
  grads = jax_tree_map(lambda p: p * 0.5 + 0.1, params)
  _, opt = tx.update(grads, opt, params)
  return cfg, model, params, opt


def jax_tree_map(f, t):
  import jax

  return jax.tree.map(f, t)


def _leaves_equal(a, b):
  import jax

  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_roundtrip_state_opt_meta(tmp_path):
  import jax
  from flax import nnx
  from stepcoder_jax import checkpoint as ck

  cfg, model, params, opt = _tiny_state()
  key = jax.random.key(7)
  meta = {
    "rng": ck.rng_to_json(key),
    "curriculum": {"p1": {"stage": 2, "passes": [1, 0]}},
    "data_position": {"epoch": 1, "index": 37},
    "gin_config": "ppo.kl_coef = 0.05\n",
  }
  with ck.Checkpointer(
    tmp_path, CheckpointConfig(save_interval_steps=1), items=("policy", "policy_opt")
  ) as c:
    assert c.save(3, {"policy": params, "policy_opt": opt}, meta)
    c.wait()
    assert c.latest_step() == 3
    # Targets give the structure back: an nnx State and optax's named tuples.
    target_params = nnx.state(type(model)(cfg, rngs=nnx.Rngs(1)), nnx.Param)
    trees, got = c.restore(targets={"policy": target_params, "policy_opt": opt})
  assert isinstance(trees["policy"], nnx.State)
  assert _leaves_equal(trees["policy"], params)
  assert not _leaves_equal(target_params, params)  # the target was only a template
  assert type(trees["policy_opt"]) is type(opt) and _leaves_equal(trees["policy_opt"], opt)
  assert got["curriculum"] == meta["curriculum"] and got["data_position"]["index"] == 37
  assert got["gin_config"] == meta["gin_config"] and got["step"] == 3
  assert np.array_equal(jax.random.key_data(ck.rng_from_json(got["rng"])), jax.random.key_data(key))
  raw = jax.random.PRNGKey(5)  # legacy uint32 keys too
  assert np.array_equal(ck.rng_from_json(ck.rng_to_json(raw)), raw)


def test_interval_and_keep_n(tmp_path):
  from stepcoder_jax import checkpoint as ck

  _, _, params, _ = _tiny_state()
  c = ck.Checkpointer(
    tmp_path, CheckpointConfig(save_interval_steps=2, max_to_keep=2), items=("policy",)
  )
  started = [c.save(s, {"policy": params}, {"s": s}) for s in range(7)]
  c.close()
  assert started == [True, False, True, False, True, False, True]
  c = ck.Checkpointer(tmp_path, CheckpointConfig(), items=("policy",))
  assert c.all_steps() == [4, 6]
  assert c.read_meta()["s"] == 6
  with pytest.raises(UserError, match="no checkpoint for step 2"):
    c.restore(2)
  c.close()


def test_unfinalized_step_is_ignored(tmp_path):
  """A save killed before orbax's atomic rename leaves `<step>.orbax-checkpoint-tmp`: skipped."""
  from stepcoder_jax import checkpoint as ck

  _, _, params, _ = _tiny_state()
  with ck.Checkpointer(tmp_path, CheckpointConfig(save_interval_steps=1), items=("policy",)) as c:
    c.save(1, {"policy": params}, {"s": 1})
  # Simulate the crash: a later step half written (some files missing, never renamed).
  tmp = tmp_path / "2.orbax-checkpoint-tmp"
  shutil.copytree(tmp_path / "1", tmp)
  (tmp / "_CHECKPOINT_METADATA").unlink()
  shutil.rmtree(tmp / "meta")
  with ck.Checkpointer(tmp_path, CheckpointConfig(), items=("policy",)) as c:
    assert c.latest_step() == 1 and c.all_steps() == [1]
    trees, meta = c.restore()
    assert meta["s"] == 1 and _leaves_equal(trees["policy"], ck._to_tree(params))


def test_empty_directory_is_a_user_error(tmp_path):
  from stepcoder_jax import checkpoint as ck

  with ck.Checkpointer(tmp_path, CheckpointConfig(), items=("policy",)) as c:
    assert c.latest_step() is None
    with pytest.raises(UserError, match="no finished checkpoint"):
      c.restore()
  with pytest.raises(UserError, match="not a stepcoder_jax training directory"):
    ck.load_policy_for_inference(tmp_path)


def test_load_policy_for_inference(tmp_path):
  import jax.numpy as jnp
  from flax import nnx
  from stepcoder_jax import checkpoint as ck
  from stepcoder_jax.models.tokenizer import tiny_tokenizer

  cfg, model, _, _ = _tiny_state()
  cdir = ck.checkpoint_dir(tmp_path)
  with ck.Checkpointer(cdir, CheckpointConfig(save_interval_steps=1)) as c:
    c.save(5, {"policy": nnx.state(model)}, {})
  ck.save_inference_assets(cdir, cfg, tiny_tokenizer())
  for path in (tmp_path, cdir, cdir / "5"):
    cfg2, dec, tok = ck.load_policy_for_inference(path)
    assert cfg2 == cfg
    assert tok is not None and tok.decode(tok.encode("def f(x):")) == "def f(x):"
  toks = jnp.asarray([[5, 9, 11, 3]], jnp.int32)
  pos = jnp.arange(4)[None]
  mask = jnp.ones((1, 4), bool)
  np.testing.assert_array_equal(
    np.asarray(dec(toks, pos, mask)[0]), np.asarray(model(toks, pos, mask)[0])
  )


@pytest.mark.slow
def test_restore_onto_different_mesh(tmp_path):
  """Saved sharded on a (2,2,2) mesh of 8 devices; restored onto (1,1,8), (8,1,1) and 1 device."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, __file__, str(tmp_path)], capture_output=True, text=True, env=env, timeout=600
  )
  assert out.returncode == 0, out.stderr[-4000:]
  rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
  by = {r["target"]: r for r in rows}
  assert set(by) == {"saved", "(1, 1, 8)", "(8, 1, 1)", "single"}
  assert by["saved"]["gate_shard"] == [32, 64]
  assert by["(1, 1, 8)"]["gate_shard"] == [64, 16]
  assert by["(8, 1, 1)"]["gate_shard"] == [64, 128]
  assert by["single"]["gate_shard"] == [64, 128]
  for r in rows:
    assert r["equal"], r


def _child(directory):
  from flax import nnx
  from stepcoder_jax import checkpoint as ck
  from stepcoder_jax import sharding
  from stepcoder_jax.config import MeshConfig
  from stepcoder_jax.models.config import ModelConfig
  from stepcoder_jax.models.decoder import Decoder

  cfg = ModelConfig.tiny("llama")
  make = lambda: Decoder(cfg, rngs=nnx.Rngs(0))
  rules = sharding.make_rules()
  mesh = sharding.make_mesh(MeshConfig(2, 2, 2))
  model = sharding.init_sharded(make, mesh, rules)
  ref = {k: np.asarray(v) for k, v in nnx.to_flat_state(nnx.state(model))}

  def report(target, state):
    flat = dict(nnx.to_flat_state(state))
    gate = flat[("layers", 0, "mlp", "gate_proj")][...]
    equal = all(np.array_equal(np.asarray(flat[k][...]), v) for k, v in ref.items())
    print(
      json.dumps(
        {
          "target": target,
          "equal": equal,
          "gate_shard": list(gate.addressable_shards[0].data.shape),
        }
      ),
      flush=True,
    )

  with ck.Checkpointer(directory, CheckpointConfig(save_interval_steps=1), items=("policy",)) as c:
    c.save(1, {"policy": nnx.state(model)}, {})
  report("saved", nnx.state(model))
  with ck.Checkpointer(directory, CheckpointConfig(), items=("policy",)) as c:
    for shape in ((1, 1, 8), (8, 1, 1)):
      m2 = sharding.make_mesh(MeshConfig(*shape))
      _, target = sharding.abstract_state(make, m2, rules)
      trees, _ = c.restore(targets={"policy": target})
      report(str(shape), trees["policy"])
    trees, _ = c.restore(names=["policy"])  # no target: first local device
    state = nnx.state(nnx.eval_shape(make))
    nnx.replace_by_pure_dict(state, trees["policy"])  # a pure dict (string keys) back to a State
    report("single", state)


if __name__ == "__main__":
  _child(sys.argv[1])
