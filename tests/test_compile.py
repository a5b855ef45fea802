"""`stepcoder-jax compile`: every program of a (tiny) run compiled for a TPU slice and a GPU
target from this CPU machine, the HLO accounting of loops and collectives, the one-line errors,
and that the compile-only backends leave every other command's start alone.

The compiles run in subprocesses: the command starts jax with its backends (libtpu, the CUDA
plugin) on the path, which the test process must not load. The tiny run is shrunk to 16 prompt +
8 new tokens so that each libtpu / GPU compile takes seconds.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = [
  "--gin_file",
  "experiments/tiny_cpu.gin",
  "--gin.prompt.max_tokens=16",
  "--gin.train.max_new_tokens=8",
  "--gin.sft.max_len=32",
  "--gin.sft.batch_size=8",
  "--gin.train.problems_per_iteration=8",
  "--gin.model.remat=True",
]
PROGRAMS = ("sft_step", "sampler", "scoring", "ppo_update")


def _compile(*argv, timeout=600):
  return subprocess.run(
    [sys.executable, "-m", "stepcoder_jax", "compile", *argv],
    capture_output=True,
    text=True,
    timeout=timeout,
    cwd=ROOT,
  )


@pytest.mark.slow
@pytest.mark.parametrize(
  "topology,devices,mesh",
  [
    ("v4-8", 4, {"data": 1, "fsdp": 4, "tensor": 1}),
    ("h100x2", 2, {"data": 1, "fsdp": 2, "tensor": 1}),
  ],
)
def test_tiny_run_compiles_for_a_tpu_slice_and_a_gpu(topology, devices, mesh):
  p = _compile("--topology", topology, *TINY, "--json")
  assert p.returncode == 0, p.stderr[-3000:]
  r = json.loads(p.stdout)
  assert r["topology"] == topology and r["devices"] == devices and r["mesh"] == mesh
  assert r["fits"] is True and r["does_not_fit"] is None
  assert sorted(r["programs"]) == sorted(PROGRAMS)
  for name, prog in r["programs"].items():
    for key in (
      "peak_bytes",
      "argument_bytes",
      "temp_bytes",
      "device_memory_bytes",
      "flops",
      "collective_bytes",
      "time_lower_bound_s",
    ):
      assert key in prog, (name, key)
    assert 0 < prog["peak_bytes"] < prog["device_memory_bytes"], name
    assert prog["argument_bytes"] > 0 and prog["time_lower_bound_s"] > 0, name
    # Matrix-product FLOPs at least the k x N x tokens of the model (attention scores on top);
    # a loop counted once instead of trip-count times would fall far below.
    assert prog["flops_vs_expected"] > 0.95, (name, prog["flops_vs_expected"])
  # FSDP: the sampler's parameters are gathered inside each decode step on this layout.
  step = r["programs"]["sampler"]["decode_step"]
  assert step["steps"] == 8
  assert step["collective_bytes"] > 0
  assert r["iteration_time_lower_bound_s"] == pytest.approx(
    sum(r["programs"][n]["time_lower_bound_s"] for n in ("sampler", "scoring", "ppo_update"))
  )
  assert 0 < r["mfu_bound"] <= 1


def test_loops_and_collectives_are_counted_per_iteration_on_tpu():
  """A scan of 5 matmuls with FSDP-split weights, compiled for v4-8: XLA's cost analysis counts
  the body once; the HLO accounting finds the trip count (TPU records none) and multiplies."""
  code = textwrap.dedent("""
    import json
    from stepcoder_jax.compile import hlo, report, targets
    t = targets.parse("v4-8")
    report.prepare_environment(t)
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    mesh = Mesh(np.array(report.target_devices(t)), ("fsdp",))
    def f(w, x):
      return jax.lax.scan(lambda c, _: (jnp.tanh(c @ w), None), x, None, length=5)[0]
    args = (jax.ShapeDtypeStruct((512, 512), jnp.bfloat16, sharding=NamedSharding(mesh, P("fsdp"))),
            jax.ShapeDtypeStruct((64, 512), jnp.bfloat16, sharding=NamedSharding(mesh, P("fsdp"))))
    c = jax.jit(f, out_shardings=NamedSharding(mesh, P("fsdp"))).lower(*args).compile()
    a = hlo.Analysis(c.as_text())
    print(json.dumps({"flops": a.total.flops, "xla": c.cost_analysis()["flops"],
                      "loops": [[l.trip_count, l.known] for l in a.loops],
                      "collectives": a.total.collectives}))
  """)
  p = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=900
  )
  assert p.returncode == 0, p.stderr[-3000:]
  r = json.loads(p.stdout.strip().splitlines()[-1])
  per_device = 2 * (64 // 4) * 512 * 512  # rows split 4 ways, the full weight after a gather
  assert r["flops"] == 5 * per_device
  assert r["xla"] < 1.1 * per_device  # XLA: the body once
  assert [5, True] in r["loops"]
  gathered = r["collectives"]["all-gather"]
  assert gathered["result_bytes"] == 5 * 512 * 512 * 2  # the bf16 weight, every iteration


def test_a_program_that_does_not_fit_is_one_line_exit_1():
  # The tiny model's SFT step with 65536 rows of 512 tokens on one v5e chip: its activations
  # (65536 x 512 x 64 float32 = 8 GiB per layer input, several kept for the backward) exceed
  # the chip's 16 GiB; the TPU compiler itself refuses it (RESOURCE_EXHAUSTED).
  p = _compile(
    "--topology",
    "v5e-1",
    "--gin_file",
    "experiments/tiny_cpu.gin",
    "--gin.sft.batch_size=65536",
    "--gin.sft.max_len=512",
    "--programs",
    "sft_step",
  )
  assert p.returncode == 1, p.stderr[-3000:]
  errs = [l for l in p.stderr.splitlines() if "does not fit" in l]
  assert len(errs) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
  assert errs[0].startswith("does not fit: v5e-1: sft_step needs "), errs[0]
  assert "GiB of a TPU v5e; try a smaller sft.batch_size" in errs[0], errs[0]


@pytest.mark.parametrize(
  "argv,expect",
  [
    (["--topology", "v9-8"], "--topology 'v9-8': unknown target"),
    (["--topology", "v4-8", "--gin.mesh.tensor=3"], "do not divide the 4 devices"),
    (["--topology", "v4-8", "--gin.ppo.no_such_knob=1"], "no_such_knob"),
    (
      [
        "--topology",
        "v4-8",
        "--gin_file",
        "experiments/tiny_cpu.gin",
        "--gin.train.problems_per_iteration=6",
      ],
      "rollout rows are not divisible by 4",
    ),
  ],
)
def test_bad_input_is_one_line_exit_2(argv, expect):
  p = _compile(*argv, timeout=900)  # a subprocess: the test process stays free of libtpu
  assert p.returncode == 2, p.stderr[-3000:]
  err = p.stderr.strip().splitlines()
  assert len(err) == 1 and expect in err[0] and "Traceback" not in p.stderr, err


def test_other_commands_load_no_compile_backend():
  """libtpu and the CUDA plugin live outside site-packages: a plain jax start neither loads them
  nor prints anything (an installed libtpu probes for a TPU and warns; the CUDA plugin logs)."""
  from stepcoder_jax.compile import report

  tpu, cuda = report.plugin_dir() / "tpu", report.plugin_dir() / "cuda"
  assert (tpu / "libtpu").is_dir() and (cuda / "jax_plugins" / "xla_cuda12").is_dir(), (
    "scripts/setup_venv.sh installs them"
  )
  code = (
    "import importlib.util, jax, jax.numpy as jnp; jnp.ones(2).block_until_ready(); "
    "print(importlib.util.find_spec('libtpu'), jax.devices()[0].platform)"
  )
  p = subprocess.run(
    [sys.executable, "-c", code],
    capture_output=True,
    text=True,
    cwd=ROOT,
    env={k: v for k, v in __import__("os").environ.items() if k != "JAX_PLATFORMS"},
    timeout=900,
  )
  assert p.returncode == 0, p.stderr
  assert p.stdout.split() == ["None", "cpu"]
  assert p.stderr == ""


def test_hlo_accounting_matches_xla_on_a_loop_free_program():
  """The tiny run's scoring forward on one CPU device has no loop, so XLA's own cost analysis
  is exact for it: the HLO accounting must agree on bytes (same model: fusion operands and
  results) and on FLOPs (matrix products; XLA adds element-wise work, a few percent)."""
  import jax

  from stepcoder_jax import sharding
  from stepcoder_jax.compile import hlo, programs
  from stepcoder_jax.config import MeshConfig
  from stepcoder_jax.models.config import ModelConfig
  from stepcoder_jax.rl.config import PPOConfig, TrainConfig
  from stepcoder_jax.runs.config import SFTConfig

  mesh = sharding.make_mesh(MeshConfig(1, 1, 1), jax.devices()[:1])
  progs, _, _ = programs.build(
    ModelConfig.tiny(),
    TrainConfig(
      problems_per_iteration=4, samples_per_problem=1, max_prompt_tokens=64, max_new_tokens=16
    ),
    PPOConfig(minibatches=1),
    SFTConfig(batch_size=4, max_len=64),
    mesh,
    sharding.make_rules(),
  )
  scoring = next(p for p in progs if p.name == "scoring")
  compiled = scoring.jitted.lower(*scoring.args).compile()
  a = hlo.Analysis(compiled.as_text())
  xla = compiled.cost_analysis()
  assert not a.loops
  assert a.total.bytes == pytest.approx(xla["bytes accessed"], rel=0.01)
  assert 0.85 * xla["flops"] < a.total.flops <= xla["flops"]


@pytest.mark.parametrize("remat,suggested", [(False, True), (True, False), (None, True)])
def test_misfit_advice_suggests_remat_only_where_it_is_off(remat, suggested):
  from stepcoder_jax.compile import report as report_lib

  r = {
    "topology": "v5e-16",
    "chip": "TPU v5e",
    "chip_spec": {"hbm_bytes": 16 * 2**30},
    "programs": {"ppo_update": {"fits": False, "peak_bytes": 20 * 2**30}},
  }
  if remat is not None:  # None: a report written before the field existed
    r["remat"] = remat
  line = report_lib.misfit_line(r)
  assert line.startswith("v5e-16: ppo_update needs 20.00 GiB per device"), line
  assert ("model.remat = True" in line) == suggested, line
