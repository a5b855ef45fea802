"""Scale-out of the trainer: its sharded sampler / rollout forward / ppo_step on 8 simulated CPU
devices, and a 2-process local pod (launch/local_pod.sh) against one process with 4 devices.

The device count of a process is fixed when jax starts, so the 8-device checks run in a child
process (this file run as a script with XLA_FLAGS set) and the pod runs are subprocesses; the
rest of the suite keeps its single device.

Tolerances (float32): the first ppo_step's metrics are computed before any update, so they differ
between meshes only by reduction order (~1e-7 relative). The comparison of the updated
parameters uses Adam with eps = 1, whose first step is lr * g / (|g| + 1): smooth in g, so float
noise in a near-zero gradient is not amplified to a full +-lr step as with a small eps.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2)]
# Metrics of the first ppo_step compared at 1e-5 relative. Left out: advantage_mean (the mean of
# whitened advantages, ~1e-8 of pure rounding), approx_kl (new == old policy: rounding around 0),
# clip fractions (indicators of a float comparison at a boundary). ref_kl is 0 on one device
# (reference == policy) and a difference of equal sums elsewhere: compared absolutely.
STEP_METRICS = (
  "loss",
  "policy_loss",
  "value_loss",
  "entropy",
  "policy_grad_norm",
  "value_grad_norm",
  "explained_variance",
  "return_mean",
  "value_mean",
  "mean_reward",
  "fgo_density",
  "response_length",
)
VALUE_METRICS = ("value_loss", "value_grad_norm", "explained_variance", "return_mean", "value_mean")
# The critic-free step (no value model) has the same metrics but the value ones.
METRICS = {"gae": STEP_METRICS, "grpo": tuple(k for k in STEP_METRICS if k not in VALUE_METRICS)}


def _cmp(key, metrics):
  """The compared form of a metric: explained variance = 1 - Var(R - V) / Var(R) is compared
  through its variance ratio (near 1 for an untrained value head, so `1 - x` would turn the
  ratio's 1e-7 rounding into a large relative difference of a value near 0)."""
  v = metrics[key]
  return 1.0 - v if key == "explained_variance" else v


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


# ---------------------------------------------------------------------------------------------
# (a) sampler, rollout forward and ppo_step under meshes


def _mesh_results(advantage):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  t0 = time.time()
  out = subprocess.run(
    [sys.executable, __file__, advantage],
    capture_output=True,
    text=True,
    env=env,
    timeout=900,
    cwd=ROOT,
  )
  assert out.returncode == 0, out.stderr[-4000:]
  print(f"8-device child: {time.time() - t0:.1f}s")
  return [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("advantage", ["gae", "grpo"])
def test_trainer_functions_under_meshes_equal_one_device_and_split_state(advantage):
  """One test per estimator (one 8-device child each). Under grpo the groups (4 rows each)
  span several devices on every mesh, so the group statistics cross shards."""
  rows = _mesh_results(advantage)
  results = {tuple(r["mesh"]): r for r in rows if r["rules"] == "shared"}
  assert sorted(results) == sorted(MESHES)
  for r in rows:
    mesh = (tuple(r["mesh"]), r["rules"])
    print(mesh, json.dumps({k: v for k, v in r.items() if k.endswith("diff")}))
    assert r["tokens_equal"], (mesh, "sampled tokens differ from one device")
    assert r["forward_max_rel_diff"] < 1e-5, mesh
    assert sorted(r["metric_rel_diff"]) == sorted(METRICS[advantage])
    for k in METRICS[advantage]:
      assert r["metric_rel_diff"][k] < 1e-5, (mesh, k, r["metric_rel_diff"][k])
    assert r["ref_kl_abs_diff"] < 1e-5, mesh  # a per-row sum of ~8 log-probs of size ~6
    assert r["params_max_rel_diff"] < 1e-5, mesh
    # The step itself (new - old = lr * g / (|g| + 1) ~ lr * g): the gradients' relative
    # rounding. Measured <= 3e-4 for MLP/value tensors and ~1.3e-3 for attention q/k, whose
    # gradients in a random model (near-uniform attention) are small differences of large terms.
    assert r["update_max_rel_diff"] < 5e-3, mesh
    assert r["ref_kl_after"] > 1e-4, mesh  # the step changed the policy: not a no-op compared
    assert r["state_shardings_kept"], mesh  # ppo_step's outputs stay on the placement

  # The state really is split. Tiny llama: vocab 300, hidden 64, 4 heads, 2 kv heads,
  # head_dim 16, mlp 128; FSDP splits embed, tensor splits heads / mlp / vocab.
  assert results[(8, 1, 1)]["shards"]["embed"] == [300, 64]  # pure data parallel
  value = {"value_q_proj": [16, 4, 16]} if advantage == "gae" else {}  # grpo: no value model
  assert results[(2, 4, 1)]["shards"] == {
    "embed": [300, 16],
    "q_proj": [16, 4, 16],
    "down_proj": [128, 16],
    **value,
    "policy_mu_q_proj": [16, 4, 16],
    "ref_q_proj": [16, 4, 16],
  }
  value = {"value_q_proj": [32, 2, 16]} if advantage == "gae" else {}
  assert results[(2, 2, 2)]["shards"] == {
    "embed": [150, 32],
    "q_proj": [32, 2, 16],
    "down_proj": [64, 32],
    **value,
    "policy_mu_q_proj": [32, 2, 16],
    "ref_q_proj": [32, 2, 16],
  }
  assert [results[m]["batch_rows_per_device"] for m in MESHES] == [1, 1, 2]
  if advantage != "gae":
    assert not any(r["rules"] == "per-model" for r in rows)
    return
  mixed = next(r for r in rows if r["rules"] == "per-model")
  assert mixed["shards"]["value_q_proj"] == [64, 2, 16]  # tensor only (no FSDP)
  assert mixed["shards"]["ref_q_proj"] == [64, 4, 16]  # replicated
  assert mixed["shards"]["q_proj"] == [32, 2, 16]  # the policy as before


# ---------------------------------------------------------------------------------------------
# (b) launch/local_pod.sh 2 (2 processes x 2 devices) vs 1 process x 4 devices

TRAIN = [
  "train",
  "--gin_file=experiments/tiny_cpu.gin",
  "--iterations=2",
  "--gin.train.eval_every=0",
  "--gin.execution.workers=1",
]
EXACT = (
  "reward_mean",
  "pass_rate",
  "response_tokens_mean",
  "fgo_mask_density",
  "outcome/passed",
  "outcome/failed",
  "outcome/runtime_error",
  "outcome/timeout",
  "outcome/compile_error",
  "ppo/mean_reward",
  "ppo/response_length",
  "ppo/fgo_density",
)
# Losses and other float reductions (1e-5 relative). policy_loss is a cancelling sum (whitened
# advantages have mean 0): compared absolutely below, at 1e-5 of the per-token scale (|A| ~ 1).
CLOSE = (
  "ppo/loss",
  "ppo/value_loss",
  "ppo/entropy",
  "ppo/policy_grad_norm",
  "ppo/value_grad_norm",
  "ppo/ref_kl",
  "ppo/return_mean",
  "ppo/kl_coef",
)
# 0 by construction at step 1 (the policy is the reference): there the value is rounding noise
# (~1e-7 nats), whose relative difference between two runs means nothing, so step 1 compares it
# absolutely (1e-5 nats) and later steps relatively, like the rest of CLOSE.
ZERO_AT_STEP_1 = ("ppo/ref_kl",)


def _metrics(work):
  return [json.loads(l) for l in (Path(work) / "metrics.jsonl").read_text().splitlines() if l]


@pytest.mark.slow
def test_local_pod_matches_one_process(tmp_path):
  py = sys.executable
  base = dict(
    os.environ, STEPCODER_JAX_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu", PYTHON=py
  )
  base.pop("XLA_FLAGS", None)
  t0 = time.time()
  pod = subprocess.Popen(
    [
      "bash",
      "launch/local_pod.sh",
      "2",
      "--devices-per-process",
      "2",
      "--logdir",
      str(tmp_path / "pod_logs"),
      "--",
      *TRAIN,
      f"--work_dir={tmp_path / 'pod'}",
    ],
    cwd=ROOT,
    env=base,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  one = subprocess.Popen(
    [py, "-m", "stepcoder_jax", *TRAIN, f"--work_dir={tmp_path / 'one'}"],
    cwd=ROOT,
    env=dict(base, XLA_FLAGS="--xla_force_host_platform_device_count=4"),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  pod_out, pod_err = pod.communicate(timeout=900)
  one_out, one_err = one.communicate(timeout=900)
  print(f"pod + one-process runs (concurrent): {time.time() - t0:.1f}s")
  assert pod.returncode == 0, (pod_out + pod_err)[-4000:]
  assert one.returncode == 0, one_err[-4000:]
  log0 = (tmp_path / "pod_logs" / "proc_0.log").read_text()
  assert "process 0 of 2, 2 local / 4 global devices" in log0
  assert "mesh data=1 x fsdp=4 x tensor=1 on 2 process(es)" in log0
  assert "on 1 process(es)" in one_err
  # Three processes shared one empty cache: one built the dataset (there, not in ~), two read it.
  log1 = (tmp_path / "pod_logs" / "proc_1.log").read_text()
  assert sum(t.count("building dataset stepcoder_builtin") for t in (log0, log1, one_err)) == 1
  built = tmp_path / "cache" / "tfds" / "stepcoder_builtin" / "1.0.0"
  assert (built / "dataset_info.json").is_file()

  a, b = _metrics(tmp_path / "pod"), _metrics(tmp_path / "one")
  assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
  worst = {}
  for ra, rb in zip(a, b):
    for k in EXACT:
      assert ra[k] == rb[k], (ra["step"], k, ra[k], rb[k])
    for k in [k for k in rb if k.startswith("cccs/")]:
      assert ra[k] == rb[k], k  # the curriculum evolved identically
    for k in CLOSE:
      if ra["step"] == 1 and k in ZERO_AT_STEP_1:
        worst[f"{k}@1(abs)"] = abs(ra[k] - rb[k])
      else:
        worst[k] = max(worst.get(k, 0.0), _rel(ra[k], rb[k]))
    worst["ppo/policy_loss(abs)"] = max(
      worst.get("ppo/policy_loss(abs)", 0.0), abs(ra["ppo/policy_loss"] - rb["ppo/policy_loss"])
    )
  print("pod vs one process, max relative (absolute) differences:", json.dumps(worst))
  assert all(worst[k] < 1e-5 for k in CLOSE), worst
  assert all(worst[f"{k}@1(abs)"] < 1e-5 for k in ZERO_AT_STEP_1), worst
  assert worst["ppo/policy_loss(abs)"] < 1e-5, worst
  assert b[-1]["ppo/ref_kl"] > 1e-3, b  # step 2's policy moved: its KL is compared, not noise
  # Only process 0 wrote the logs; the pod's own files exist.
  assert (tmp_path / "pod" / "operative_config.gin").is_file()
  assert (tmp_path / "pod" / "checkpoints" / "2").is_dir()

  # The pod's final checkpoint restores in a single process on one device and equals the
  # one-process run's policy (max |diff| far below one Adam step, lr = 1e-3, and below the
  # ~4e-3 a stale or wrong checkpoint would be off by after 4 updates).
  code = f"""
import json, jax, numpy as np
from flax import nnx
from stepcoder_jax import checkpoint as ck
assert jax.device_count() == 1
_, pod, tok = ck.load_policy_for_inference({str(tmp_path / 'pod')!r})
_, one, _ = ck.load_policy_for_inference({str(tmp_path / 'one')!r})
a = jax.tree.leaves(nnx.state(pod, nnx.Param)); b = jax.tree.leaves(nnx.state(one, nnx.Param))
print(json.dumps({{"n": len(a), "one_device": all(len(x.devices()) == 1 for x in a),
  "shapes_equal": all(x.shape == y.shape for x, y in zip(a, b)),
  "max_abs_diff": max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b)),
  "tokenizer": tok is not None}}))
"""
  t1 = time.time()
  p = subprocess.run(
    [py, "-c", code], cwd=ROOT, env=base, capture_output=True, text=True, timeout=900
  )
  assert p.returncode == 0, p.stderr[-3000:]
  r = json.loads(p.stdout.strip().splitlines()[-1])
  print(f"restore on 1 device: {time.time() - t1:.1f}s", r)
  assert r["n"] > 10 and r["one_device"] and r["shapes_equal"] and r["tokenizer"]
  assert r["max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_rows_split_and_gathered_across_processes(tmp_path):
  """2 processes x 2 devices: each owns a contiguous block of rows, global arrays assemble
  from the blocks in row order, and the all-gathered judgements are in global row order on
  every process, for batch axes across processes, within them, and replicated."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  p = subprocess.run(
    [
      "bash",
      "launch/local_pod.sh",
      "2",
      "--logdir",
      str(tmp_path),
      "--entry",
      f"{sys.executable} tests/test_scaleout.py",
      "--",
      "--rows",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  logs = "".join(
    (tmp_path / f"proc_{i}.log").read_text()
    for i in range(2)
    if (tmp_path / f"proc_{i}.log").exists()
  )
  assert p.returncode == 0, (p.stdout + p.stderr + logs)[-4000:]
  rows = [json.loads(l) for l in logs.splitlines() if l.startswith("{")]
  got = {(r["process"], tuple(r["mesh"])): r for r in rows}
  assert len(got) == 6, rows
  for (proc, mesh), r in got.items():
    assert r["ok"], r
    # (1, 4, 1) and (2, 1, 2): the batch axes span both processes -> half the rows each.
    want = (0, 8) if mesh == (1, 1, 4) else (4 * proc, 4 * proc + 4)
    assert tuple(r["rows"]) == want, r


# ---------------------------------------------------------------------------------------------
# Child processes


def _child(advantage: str):
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from stepcoder_jax import sharding
  from stepcoder_jax.config import MeshConfig
  from stepcoder_jax.models.config import ModelConfig
  from stepcoder_jax.models.decoder import Decoder
  from stepcoder_jax.models.value import ValueModel
  from stepcoder_jax.rl import batching, ppo, rollout, spmd
  from stepcoder_jax.runs import trainer
  from stepcoder_jax.rl.config import PPOConfig

  assert jax.device_count() == 8, jax.devices()
  cfg = ModelConfig.tiny("llama")
  ppo_cfg = PPOConfig(
    epochs=1,
    minibatches=1,
    grad_accum=2,
    warmup_steps=0,
    adam_eps=1.0,
    policy_lr=1e-2,
    value_lr=1e-2,
    entropy_coef=0.01,
    kl_coef=0.05,
    advantage=advantage,
  )
  policy = Decoder(cfg, rngs=nnx.Rngs(0))
  value = None if ppo_cfg.critic_free else ValueModel.from_policy(policy)
  pgd, vgd, state0 = ppo.init_train_state(policy, value, ppo_cfg)
  state0 = jax.device_get(state0)  # host copy: each mesh places it afresh
  rng = np.random.default_rng(0)
  b, prompt_len, new = 8, 8, 8
  prompts = [
    list(rng.integers(3, cfg.vocab_size, int(rng.integers(3, prompt_len + 1)))) for _ in range(b)
  ]
  responses = [
    list(rng.integers(3, cfg.vocab_size, int(rng.integers(1, new + 1)))) for _ in range(b)
  ]
  arrays = batching.pack(prompts, responses, pad_id=0, prompt_len=prompt_len, response_len=new)
  arrays["response_mask"] = arrays["response_mask"].astype(np.float32)  # the Batch dtype
  fgo = (rng.random(arrays["tokens"].shape) < 0.7).astype(np.float32) * arrays["response_mask"]
  rewards = rng.choice(np.array([1.0, -0.3, -0.6, -1.0], np.float32), b)
  group = np.repeat(np.array([0, 4], np.int32), 4)  # two groups of 4 rows
  key = jax.random.PRNGKey(7)

  def run(mesh, **rule_overrides):
    rules = sharding.make_rules()
    pl = spmd.make_placement(state0, mesh, rules, **rule_overrides)
    st = spmd.to_global(state0, pl.state)
    ref = spmd.to_global(state0.policy, pl.ref)
    sampler = rollout.make_sampler(pgd, new, (), 0, prompt_len, pl)
    sampled = sampler(st, prompts, key)
    toks = sampled.ids
    dev = spmd.from_local_rows(arrays, pl, b)
    fwd = rollout.make_forward(pgd, vgd, 16, pl, response_start=prompt_len)
    scored = fwd(
      st, ref, dev["tokens"], dev["positions"], dev["attention_mask"], dev["response_mask"]
    )
    # The same forward taking old log-probs from the sampler (train.sampler_logprobs), sharded.
    via_sampler = fwd(
      st,
      ref,
      dev["tokens"],
      dev["positions"],
      dev["attention_mask"],
      dev["response_mask"],
      sampled.logprobs,
    )
    batch = ppo.Batch(
      **dev,
      **scored,
      **spmd.from_local_rows({"fgo_mask": fgo, "rewards": rewards, "group": group}, pl, b),
    )
    shards = {
      "embed": st.policy["embed"],
      "q_proj": st.policy["layers"][0]["attn"]["q_proj"],
      "down_proj": st.policy["layers"][0]["mlp"]["down_proj"],
      "policy_mu_q_proj": st.policy_opt[1][0].mu["layers"][0]["attn"]["q_proj"],
      "ref_q_proj": ref["layers"][0]["attn"]["q_proj"],
    }
    if st.value is not None:
      shards["value_q_proj"] = st.value["backbone"]["layers"][0]["attn"]["q_proj"]
    shards = {k: list(v[...].addressable_shards[0].data.shape) for k, v in shards.items()}
    rows = dev["tokens"].addressable_shards[0].data.shape[0]
    step = trainer.make_sharded_ppo_step(pgd, vgd, ppo_cfg, pl)
    new_state, met = step(st, batch)
    kept = all(
      x.sharding == s for x, s in zip(jax.tree.leaves(new_state), jax.tree.leaves(pl.state))
    )
    # A second forward with the updated policy: its log-probs moved away from the reference.
    again = fwd(
      new_state, ref, dev["tokens"], dev["positions"], dev["attention_mask"], dev["response_mask"]
    )
    ref_kl_after = float(jnp.max(jnp.abs(again["old_logprobs"] - again["ref_logprobs"])))
    return {
      "tokens": toks,
      "forward": [np.asarray(x[k]) for x in (scored, via_sampler) for k in sorted(x)],
      "metrics": {k: float(v) for k, v in jax.device_get(met).items()},
      "params": [np.asarray(x) for x in jax.tree.leaves((new_state.policy, new_state.value))],
      "shards": shards,
      "rows": rows,
      "kept": kept,
      "ref_kl_after": ref_kl_after,
    }

  t0 = time.time()
  one = run(sharding.make_mesh(MeshConfig(1, 1, 1), devices=jax.devices()[:1]))
  init = [np.asarray(x) for x in jax.tree.leaves((state0.policy, state0.value))]
  print(f"one device: {time.time() - t0:.1f}s", file=sys.stderr)
  # The last entry: (2, 2, 2) with a tensor-parallel-only value model and a replicated
  # reference policy next to the FSDP x tensor policy.
  variants = [(shape, {}) for shape in MESHES]
  if not ppo_cfg.critic_free:
    variants.append(
      (
        MESHES[-1],
        {
          "value_rules": sharding.make_rules(overrides={"embed": None}),
          "ref_rules": sharding.make_rules(rules=()),
        },
      )
    )
  for shape, overrides in variants:
    t0 = time.time()
    r = run(sharding.make_mesh(MeshConfig(*shape)), **overrides)
    upd = max(_rel(p - i, q - i) for p, q, i in zip(r["params"], one["params"], init))
    print(
      json.dumps(
        {
          "mesh": shape,
          "rules": "per-model" if overrides else "shared",
          "tokens_equal": r["tokens"] == one["tokens"],
          "forward_max_rel_diff": max(_rel(x, y) for x, y in zip(r["forward"], one["forward"])),
          "metric_rel_diff": {
            k: _rel(_cmp(k, r["metrics"]), _cmp(k, one["metrics"]))
            for k in STEP_METRICS
            if k in one["metrics"]
          },
          "ref_kl_abs_diff": abs(r["metrics"]["ref_kl"] - one["metrics"]["ref_kl"]),
          "params_max_rel_diff": max(_rel(x, y) for x, y in zip(r["params"], one["params"])),
          "update_max_rel_diff": upd,
          "shards": r["shards"],
          "batch_rows_per_device": r["rows"],
          "state_shardings_kept": r["kept"],
          "ref_kl_after": r["ref_kl_after"],
          "seconds": time.time() - t0,
        }
      ),
      flush=True,
    )


def _rows_child():
  """Run by test_rows_split_and_gathered_across_processes in each process of a local pod."""
  from stepcoder_jax import sharding
  from stepcoder_jax.config import DistributedConfig, MeshConfig

  assert sharding.distributed_init(DistributedConfig())
  import jax
  from stepcoder_jax.execution.job import ExecResult
  from stepcoder_jax.execution.reward import OUTCOMES
  from stepcoder_jax.rl import rollout, spmd

  n = 8
  for shape in [(1, 4, 1), (2, 1, 2), (1, 1, 4)]:
    pl = spmd.Placement(
      mesh=sharding.make_mesh(MeshConfig(*shape)), rules=sharding.make_rules(), state=None, ref=None
    )
    lo, hi = pl.rows(n)
    ok = pl.global_rows(hi - lo) == n
    local = np.arange(lo, hi, dtype=np.int32)[:, None] * np.array([[1, 10]], np.int32)
    arr = spmd.from_local_rows({"x": local}, pl, n)["x"]
    ok &= bool(np.array_equal(spmd.local_rows(arr, lo, hi), local))
    total = jax.jit(lambda x: x.sum(axis=0), out_shardings=pl.replicated)(arr)
    ok &= np.asarray(total).tolist() == [28, 280]  # the device sees rows 0..7 exactly once
    ok &= bool(np.array_equal(spmd.gather_rows(local, lo, hi, n)[:, 0], np.arange(n)))
    items = [rollout.Item(problem=None, stage=0, prompt=None, prompt_ids=[1]) for _ in range(n)]
    for r in range(lo, hi):  # a judged row whose every field encodes its global index
      items[r].response_ids = [5] * (r + 1)
      items[r].result = ExecResult(
        outcome=OUTCOMES[r % 5], reward=float(r) / 8, tests_passed=0, tests_total=1
      )
    fgo = np.zeros((hi - lo, 4), np.float32)
    fgo[:, 0] = 1
    res = rollout.exchange_results(
      items, items[lo:hi], fgo, np.ones((hi - lo, 4), np.float32), lo, hi
    )
    ok &= bool(np.array_equal(res.rewards, np.arange(n, dtype=np.float32) / 8))
    ok &= bool(np.array_equal(res.outcomes, np.arange(n) % 5))
    ok &= bool(np.array_equal(res.response_len, np.arange(n) + 1))
    ok &= res.metrics()["fgo_mask_density"] == 0.25
    print(
      json.dumps({"process": jax.process_index(), "mesh": shape, "rows": [lo, hi], "ok": bool(ok)}),
      flush=True,
    )


if __name__ == "__main__":
  if sys.argv[1:] == ["--rows"]:
    _rows_child()
  else:
    _child(sys.argv[1] if len(sys.argv) > 1 else "gae")
