"""launch/ scripts: the commands printed by --dry-run, and a real 2-process local pod."""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"


def _sh(script, *args, env=None, check=True):
  out = subprocess.run(
    ["bash", str(LAUNCH / script), *args],
    capture_output=True,
    text=True,
    env=dict(os.environ, **(env or {})),
    timeout=900,
  )
  if check:
    assert out.returncode == 0, out.stderr
  return out


def _commands(stdout):
  """The printed commands ('+ ' lines) as argument lists."""
  return [shlex.split(l[2:]) for l in stdout.splitlines() if l.startswith("+ ")]


def test_local_pod_dry_run():
  out = _sh(
    "local_pod.sh",
    "3",
    "-d",
    "4",
    "--port",
    "23456",
    "--mesh",
    "-1,2,1",
    "--dry-run",
    "--",
    "train",
    "--gin_file",
    "experiments/tiny_cpu.gin",
  )
  cmds = _commands(out.stdout)
  assert len(cmds) == 3
  for i, c in enumerate(cmds):
    assert c[0] == "env"
    env = dict(a.split("=", 1) for a in c[1:6])
    assert env == {
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
      "JAX_COORDINATOR_ADDRESS": "localhost:23456",
      "JAX_NUM_PROCESSES": "3",
      "JAX_PROCESS_ID": str(i),
    }
    assert c[6:9] == ["python", "-m", "stepcoder_jax"]
    assert c[9:] == [
      "train",
      "--gin_file",
      "experiments/tiny_cpu.gin",
      "--gin.mesh.data=-1",
      "--gin.mesh.fsdp=2",
      "--gin.mesh.tensor=1",
    ]


def test_local_pod_rejects_bad_usage():
  out = _sh("local_pod.sh", "two", check=False)
  assert out.returncode == 2 and "usage" in out.stderr
  out = _sh("local_pod.sh", "2", "--mesh", "2,2", "--dry-run", check=False)
  assert out.returncode == 2 and "DATA,FSDP,TENSOR" in out.stderr


def test_tpu_pod_dry_run():
  out = _sh(
    "tpu_pod.sh",
    "--name",
    "sc-v4",
    "--zone",
    "us-central2-b",
    "--project",
    "p1",
    "--accelerator-type",
    "v4-32",
    "--spot",
    "--gin_file",
    "experiments/paper_6.7b_tpu.gin",
    "--workdir",
    "gs://b/run1",
    "--hf-model",
    "deepseek-ai/deepseek-coder-6.7b-instruct",
    "--teardown",
    "--dry-run",
    "--",
    "--gin.ppo.epochs=2",
  )
  cmds = _commands(out.stdout)
  verbs = [c[4] if c[:4] == ["gcloud", "compute", "tpus", "tpu-vm"] else c[0] for c in cmds]
  assert verbs == ["describe", "create", "(cd", "scp", "ssh", "ssh", "ssh", "delete"]
  create = cmds[1]
  assert create[5] == "sc-v4" and "--spot" in create
  assert create[create.index("--accelerator-type") + 1] == "v4-32"
  assert create[create.index("--project") + 1] == "p1"
  scp, setup, fetch, train = cmds[3], cmds[4], cmds[5], cmds[6]
  assert fetch[fetch.index("--command") + 1] == (
    "huggingface-cli download deepseek-ai/deepseek-coder-6.7b-instruct "
    "--local-dir ~/models/deepseek-coder-6.7b-instruct"
  )
  assert "--worker=all" in scp and "--worker=all" in setup and "--worker=all" in train
  assert "requirements-tpu.txt" in setup[setup.index("--command") + 1]
  remote = shlex.split(train[train.index("--command") + 1].split("&&", 1)[1])
  assert remote == [
    "python3",
    "-m",
    "stepcoder_jax",
    "train",
    "--gin_file",
    "experiments/paper_6.7b_tpu.gin",
    "--gin.train.work_dir='gs://b/run1'",
    "--gin.ppo.epochs=2",
  ]
  assert "train.log" in out.stdout  # the log is streamed and saved
  out = _sh("tpu_pod.sh", "--name", "x", "--zone", "z", "--teardown-only", "--dry-run")
  assert _commands(out.stdout) == [
    ["gcloud", "compute", "tpus", "tpu-vm", "delete", "x", "--zone", "z", "--quiet"]
  ]
  out = _sh("tpu_pod.sh", "--zone", "z", "--dry-run", check=False, env={"TPU_NAME": ""})
  assert out.returncode == 2 and "--name" in out.stderr


def test_tpu_pod_auto_resume_dry_run_and_usage():
  out = _sh(
    "tpu_pod.sh",
    "--name",
    "sc",
    "--zone",
    "z",
    "--spot",
    "--auto-resume",
    "--workdir",
    "gs://b/r",
    "--max-restarts",
    "3",
    "--dry-run",
  )
  cmds = _commands(out.stdout)
  assert cmds[-1] == [
    "gcloud",
    "compute",
    "tpus",
    "tpu-vm",
    "describe",
    "sc",
    "--zone",
    "z",
    "--format=value(state)",
  ]
  assert "at most 3 restarts" in out.stdout
  out = _sh(
    "tpu_pod.sh",
    "--name",
    "sc",
    "--zone",
    "z",
    "--auto-resume",
    "--dry-run",
    check=False,
    env={"BUCKET": ""},
  )
  assert out.returncode == 2 and "--workdir" in out.stderr


# A stand-in for gcloud that keeps a slice's state in a file: `ssh` running train plays the
# attempts in $FAKE_RUNS in turn ("preempt": the run prints the trainer's stop line and the slice
# becomes PREEMPTED; "signal": the stop line on a slice that stays READY; "ok"; "fail": exit 1).
FAKE_GCLOUD = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE_DIR/calls"
state=$(cat "$FAKE_DIR/state" 2>/dev/null || echo GONE)
case "$4" in
  describe)
    [[ $state == GONE ]] && exit 1
    [[ "$*" == *--format* ]] && echo "$state"; exit 0 ;;
  create) echo READY > "$FAKE_DIR/state" ;;
  delete) echo GONE > "$FAKE_DIR/state" ;;
  ssh)
    [[ "$*" == *"stepcoder_jax train"* ]] || exit 0
    n=$(( $(cat "$FAKE_DIR/n" 2>/dev/null || echo 0) + 1 )); echo $n > "$FAKE_DIR/n"
    read -r -a runs <<< "$FAKE_RUNS"
    stop="stopped by SIGTERM after iteration $n: saved gs://b/r/checkpoints/$n; to resume, run"
    stop+=" the same command: x"
    case "${runs[$((n - 1))]}" in
      preempt) echo "$stop"; echo PREEMPTED > "$FAKE_DIR/state" ;;
      signal) echo "$stop" ;;
      ok) echo "training done" ;;
      fail) echo "Traceback"; exit 1 ;;
    esac ;;
esac
exit 0
"""


@pytest.mark.parametrize(
  "runs,rc,verbs",
  [
    (
      "preempt preempt ok",
      0,
      "describe scp ssh ssh describe delete describe create scp ssh ssh describe "
      "delete describe create scp ssh ssh describe",
    ),
    ("signal ok", 0, "describe scp ssh ssh describe ssh describe"),  # same slice, no setup
    ("fail", 1, "describe scp ssh ssh describe"),
    (
      "preempt preempt",
      2,
      "describe scp ssh ssh describe delete describe create scp ssh ssh describe",
    ),  # --max-restarts 1
  ],
  ids=["preempted-twice", "signal-only", "failure", "gives-up"],
)
def test_tpu_pod_auto_resume_loop_recreates_a_preempted_slice(tmp_path, runs, rc, verbs):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
  (bin_dir / "gcloud").chmod(0o755)
  (tmp_path / "state").write_text("READY\n")
  out = _sh(
    "tpu_pod.sh",
    "--name",
    "sc",
    "--zone",
    "z",
    "--spot",
    "--auto-resume",
    "--max-restarts",
    "1" if runs == "preempt preempt" else "5",
    "--workdir",
    "gs://b/r",
    "--logdir",
    str(tmp_path / "logs"),
    check=False,
    env={
      "PATH": f"{bin_dir}:{os.environ['PATH']}",
      "FAKE_DIR": str(tmp_path),
      "FAKE_RUNS": runs,
      "TPU_POD_STATE_WAIT_S": "0",
    },
  )
  assert out.returncode == rc, out.stdout + out.stderr
  calls = (tmp_path / "calls").read_text().splitlines()
  assert " ".join(c.split()[3] for c in calls) == verbs
  trains = [c for c in calls if "stepcoder_jax train" in c]
  assert len(set(trains)) == 1  # every attempt runs the same command on the same work dir
  assert "--gin.train.work_dir=\\'gs://b/r\\'" in trains[0]
  logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
  assert logs == ["train.log"] + [f"train.restart{i}.log" for i in range(1, len(trains))]
  if rc == 0:
    assert "training finished" in out.stdout


def test_gpu_dry_run_single_and_multi_host():
  out = _sh("gpu.sh", "--gpus", "0,1", "--dry-run", "--", "--gin.ppo.epochs=1")
  (cmd,) = _commands(out.stdout)
  assert cmd[0] == "env" and "CUDA_VISIBLE_DEVICES=0,1" in cmd and "JAX_PLATFORMS=cuda" in cmd
  assert not any(a.startswith("JAX_COORDINATOR_ADDRESS") for a in cmd)
  i = cmd.index("-m")
  assert cmd[i + 1 :] == [
    "stepcoder_jax",
    "train",
    "--gin_file",
    "experiments/gpu_dev_qwen.gin",
    "--gin.ppo.epochs=1",
  ]
  out = _sh(
    "gpu.sh", "--coordinator", "10.0.0.1:1234", "--num-hosts", "4", "--host-id", "3", "--dry-run"
  )
  (cmd,) = _commands(out.stdout)
  assert {
    "JAX_COORDINATOR_ADDRESS=10.0.0.1:1234",
    "JAX_NUM_PROCESSES=4",
    "JAX_PROCESS_ID=3",
  } <= set(cmd)
  out = _sh("gpu.sh", "--num-hosts", "4", "--dry-run", check=False)
  assert out.returncode == 2 and "--coordinator" in out.stderr


def test_gpu_smoke_dry_run():
  out = _sh("gpu_smoke.sh", "--workdir", "/tmp/w", "--iterations", "2", "--dry-run")
  cmds = _commands(out.stdout)
  assert len(cmds) == 2 and all("JAX_PLATFORMS=cuda" in c for c in cmds)
  train = cmds[1]
  assert train[train.index("-m") + 1 : train.index("-m") + 3] == ["stepcoder_jax", "train"]
  assert "--gin.mesh.data=1" in train and "--gin.train.work_dir='/tmp/w'" in train


@pytest.mark.parametrize(
  "gin_file", ["experiments/paper_6.7b_tpu.gin", "experiments/gpu_dev_qwen.gin"]
)
def test_experiment_configs_parse(gin_file):
  """Every binding names an existing configurable (gin rejects unknown ones)."""
  import gin
  from stepcoder_jax import gin_setup

  gin_setup.parse([gin_file], [])
  try:
    assert gin.query_parameter("model.remat") is True
    assert gin.query_parameter("dataset.name") == "apps_plus"
  finally:
    gin.clear_config()


def test_paper_mesh_fits_a_v4_64_slice():
  """The paper config's mesh fills 32 chips as fsdp 8 x tensor 4, and the batch splits."""
  import gin
  from stepcoder_jax import gin_setup, sharding
  from stepcoder_jax.config import MeshConfig

  gin_setup.parse(["experiments/paper_6.7b_tpu.gin"], [])
  try:
    mesh_cfg = MeshConfig()
    rollout = gin.query_parameter("train.problems_per_iteration") * gin.query_parameter(
      "train.samples_per_problem"
    )
    minibatch = rollout // gin.query_parameter("ppo.minibatches")
  finally:
    gin.clear_config()
  data, fsdp, tensor = sharding.mesh_shape(mesh_cfg, 32)
  assert (data, fsdp, tensor) == (1, 8, 4)
  assert rollout % (data * fsdp) == 0 and minibatch % (data * fsdp) == 0


def test_requirements_pin_accelerator_jax():
  tpu = (ROOT / "requirements-tpu.txt").read_text()
  gpu = (ROOT / "requirements-gpu.txt").read_text()
  assert "-r requirements.txt" in tpu and "jax[tpu]==0.10.2" in tpu
  assert "-r requirements.txt" in gpu and "jax[cuda12]==0.10.2" in gpu


# ---------------------------------------------------------------------------------------------
# A real pod of 2 processes x 2 CPU devices (gloo), against 1 process.


@pytest.mark.slow
def test_local_pod_two_processes_match_one_and_checkpoint_restores(tmp_path):
  out = subprocess.run(
    [
      "bash",
      str(LAUNCH / "local_pod.sh"),
      "2",
      "-d",
      "2",
      "--logdir",
      str(tmp_path / "logs"),
      "--entry",
      f"{sys.executable} {__file__}",
      "--",
      str(tmp_path),
    ],
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  pod = json.loads((tmp_path / "pod.json").read_text())
  assert pod["process_count"] == 2 and pod["device_count"] == 4
  assert pod["global_batch"] == [8, 6] and pod["local_rows"] == 4
  assert pod["embed_shard"] == [300, 32]  # fsdp=2 really splits the parameters across hosts

  # The same computation in one process on one device.
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from stepcoder_jax import checkpoint as ck
  from stepcoder_jax.models.config import ModelConfig
  from stepcoder_jax.models.decoder import Decoder

  cfg = ModelConfig.tiny("llama")
  model = Decoder(cfg, rngs=nnx.Rngs(0))
  b = _global_batch()
  h, _ = model(
    jnp.asarray(b["tokens"]), jnp.asarray(b["positions"]), jnp.asarray(b["attention_mask"])
  )
  ref = float(jnp.sum(h * h))
  assert pod["sum_sq_hidden"] == pytest.approx(ref, rel=1e-5)

  # The checkpoint the 2 hosts wrote together restores here, on 1 device.
  cfg2, dec, _ = ck.load_policy_for_inference(tmp_path / "run")
  assert cfg2 == cfg
  saved = np.load(tmp_path / "params.npz")  # what the pod held, gathered from both hosts
  restored = jax.tree.leaves(nnx.state(dec))
  assert len(saved.files) == len(restored)
  for k, a, b2 in zip(range(len(restored)), restored, jax.tree.leaves(nnx.state(model))):
    np.testing.assert_array_equal(np.asarray(a), saved[f"p{k}"])
    # The jitted sharded init equals eager init up to float rounding of the fused scaling.
    np.testing.assert_allclose(np.asarray(a), np.asarray(b2), rtol=1e-6, atol=1e-8)
  assert len(jax.tree.leaves(nnx.state(dec))[0].devices()) == 1


def _global_batch():
  tokens = (np.arange(8 * 6).reshape(8, 6) * 7 % 290 + 3).astype(np.int32)
  mask = np.ones((8, 6), bool)
  mask[::3, :2] = False
  positions = np.maximum(np.cumsum(mask, 1) - 1, 0) * mask
  return {"tokens": tokens, "positions": positions.astype(np.int32), "attention_mask": mask}


def _pod_worker(outdir):
  """One process of the pod: shard a model over 2 hosts, run a forward, save a checkpoint."""
  from stepcoder_jax import sharding

  sharding.distributed_init()
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from stepcoder_jax import checkpoint as ck
  from stepcoder_jax.config import CheckpointConfig, MeshConfig
  from stepcoder_jax.models.config import ModelConfig
  from stepcoder_jax.models.decoder import Decoder

  cfg = ModelConfig.tiny("llama")
  mesh = sharding.make_mesh(MeshConfig(data=-1, fsdp=2, tensor=1))
  rules = sharding.make_rules()
  model = sharding.init_sharded(lambda: Decoder(cfg, rngs=nnx.Rngs(0)), mesh, rules)
  graphdef, state = nnx.split(model)
  i, rows = jax.process_index(), 8 // jax.process_count()
  local = {k: v[i * rows : (i + 1) * rows] for k, v in _global_batch().items()}
  batch = sharding.shard_batch(local, mesh, rules)

  @jax.jit
  def sum_sq(state, b):
    h, _ = nnx.merge(graphdef, state)(b["tokens"], b["positions"], b["attention_mask"])
    return jnp.sum(h * h)

  total = float(sum_sq(state, batch))
  cdir = ck.checkpoint_dir(Path(outdir) / "run")
  with ck.Checkpointer(cdir, CheckpointConfig(save_interval_steps=1), items=("policy",)) as c:
    c.save(1, {"policy": state}, {"note": "2-process pod"})
  ck.save_inference_assets(cdir, cfg)
  from jax.experimental import multihost_utils

  full = [
    np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in jax.tree.leaves(state)
  ]
  if jax.process_index() == 0:
    np.savez(Path(outdir) / "params.npz", **{f"p{k}": v for k, v in enumerate(full)})
    (Path(outdir) / "pod.json").write_text(
      json.dumps(
        {
          "process_count": jax.process_count(),
          "device_count": jax.device_count(),
          "global_batch": list(batch["tokens"].shape),
          "local_rows": rows,
          "embed_shard": list(model.embed[...].addressable_shards[0].data.shape),
          "sum_sq_hidden": total,
        }
      )
    )


if __name__ == "__main__":
  _pod_worker(sys.argv[1])
