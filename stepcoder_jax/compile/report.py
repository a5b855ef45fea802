"""Compile every program of a run for a target and put the numbers together.

Per program (per device): memory from the compiler (`memory_analysis`: arguments, outputs,
temporaries, aliases; peak = arguments + outputs - aliases + temporaries, plus what else stays
resident at that moment: the rest of the training state and the reference policy), FLOPs, bytes
and collectives from the HLO (`hlo.py`, loops multiplied out), and a lower bound of its time:
max(FLOPs / peak FLOP/s, bytes / HBM bandwidth) with the chip's published figures
(`targets.CHIPS`). The iteration's bound is the sum over sampler, scoring and update; its MFU
bound is the model FLOPs (6N per trained token, 2N per forward token) over devices x peak x that
time. A program the compiler rejects for memory (RESOURCE_EXHAUSTED on TPU) is reported with the
sizes from the compiler's message.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from stepcoder_jax.compile import targets as targets_lib
from stepcoder_jax.errors import UserError

_log = logging.getLogger(__name__)

# Where setup_venv.sh installs the compile-only backends, outside site-packages so that no other
# command loads them (libtpu probes for a TPU when jax starts; the CUDA plugin logs its absence).
PLUGIN_DIR_VAR = "STEPCODER_JAX_COMPILE_TARGETS"


def plugin_dir() -> Path:
  return Path(os.environ.get(PLUGIN_DIR_VAR) or Path(sys.prefix) / "compile_targets")


def prepare_environment(target: targets_lib.Target) -> None:
  """Before jax starts: make the target's compiler importable and keep it quiet.

  Call before anything initialises jax's backends. JAX_PLATFORMS=cpu: compiling needs no
  accelerator, and a real one here must not be claimed (a training run may be using it).
  """
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # another process may hold libtpu
  kind = "tpu" if target.platform == "tpu" else "cuda"
  d = plugin_dir() / kind
  if d.is_dir() and str(d) not in sys.path:
    sys.path.insert(0, str(d))
  if kind == "cuda":
    # Without the GPU, XLA cannot autotune Triton gemm tilings, and for some small matrix
    # shapes it finds none ("Couldn't find output tile sizes"); cuBLAS gemms compile always.
    flag = "--xla_gpu_enable_triton_gemm=false"
    if flag not in os.environ.get("XLA_FLAGS", ""):
      os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
  if kind == "tpu":
    # libtpu looks for a TPU VM's metadata unless told what it runs on (compile-only here).
    gcp = target.name.lower().replace("v5e-", "v5litepod-")
    for k, v in {
      "TPU_SKIP_MDS_QUERY": "1",
      "TPU_ACCELERATOR_TYPE": gcp,
      "TPU_WORKER_HOSTNAMES": "localhost",
      "TPU_WORKER_ID": "0",
    }.items():
      os.environ.setdefault(k, v)


def target_devices(target: targets_lib.Target) -> list:
  """Compile-only devices of the target (they hold no arrays)."""
  import importlib.util

  from jax.experimental import topologies

  if target.platform == "tpu":
    if importlib.util.find_spec("libtpu") is None:
      raise UserError(
        f"--topology {target.name}: libtpu is not installed (expected under "
        f"{plugin_dir() / 'tpu'}; run scripts/setup_venv.sh)"
      )
    topo = topologies.get_topology_desc(
      topology_name=target.topology,
      platform="tpu",
      chip_config_name=target.chip_config,
      chips_per_host_bounds=target.chips_per_host,
      num_slices=1,
      wrap=target.wrap,
    )
  else:
    if importlib.util.find_spec("jax_plugins.xla_cuda12") is None:
      raise UserError(
        f"--topology {target.name}: jax's CUDA plugin is not installed (expected "
        f"under {plugin_dir() / 'cuda'}; run scripts/setup_venv.sh)"
      )
    topo = topologies.get_topology_desc(
      topology_name="",
      platform="cuda",
      target_config=target.gpu_target_config(),
      topology=target.topology,
    )
  devices = list(topo.devices)
  if len(devices) != target.devices:
    raise RuntimeError(f"{target.name}: expected {target.devices} devices, got {len(devices)}")
  return devices


_OOM = re.compile(r"RESOURCE_EXHAUSTED|Ran out of memory|exceeds available|out of memory", re.I)


def _size(text: str) -> float | None:
  m = re.match(r"\s*([\d.]+)\s*([KMGT]?)i?B?", text)
  if not m:
    return None
  return float(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2)]


def oom_summary(message: str) -> dict:
  """What the compiler said when a program did not fit: its first line and the sizes in it."""
  line = next((l.strip() for l in message.splitlines() if _OOM.search(l)), message.strip())
  out: dict[str, Any] = {"compiler_message": line[:400]}
  m = re.search(r"\(([\d.]+[KMGT]?)\)\s*exceeds available[^(]*\(([\d.]+[KMGT]?)\)", line)
  if m:
    out["needed_bytes"], out["available_bytes"] = _size(m.group(1)), _size(m.group(2))
  m = re.search(r"Used\s+([\d.]+[KMGT])\s+of\s+([\d.]+[KMGT])", message)
  if m and "needed_bytes" not in out:
    out["needed_bytes"], out["available_bytes"] = _size(m.group(1)), _size(m.group(2))
  return out


def _memory(compiled) -> dict[str, int]:
  m = compiled.memory_analysis()
  get = lambda k: int(getattr(m, k, 0) or 0)
  arg, out, alias, temp = (
    get("argument_size_in_bytes"),
    get("output_size_in_bytes"),
    get("alias_size_in_bytes"),
    get("temp_size_in_bytes"),
  )
  return {
    "argument_bytes": arg,
    "output_bytes": out,
    "alias_bytes": alias,
    "temp_bytes": temp,
    "generated_code_bytes": get("generated_code_size_in_bytes"),
    "program_peak_bytes": arg + out - alias + temp,
  }


def _xla_cost(compiled) -> dict[str, float] | None:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (GPU: not implemented)
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost:
    return None
  return {
    "flops_loop_bodies_once": float(cost.get("flops", 0.0)),
    "bytes_accessed_loop_bodies_once": float(cost.get("bytes accessed", 0.0)),
  }


def compile_program(prog, chip: targets_lib.Chip, memory_bytes: int, devices: int) -> dict:
  """Lower and compile one program; its numbers (see the module docstring)."""
  from stepcoder_jax.compile import hlo

  t0 = time.time()
  try:
    compiled = prog.jitted.lower(*prog.args).compile()
  except Exception as e:  # pylint: disable=broad-except
    if not _OOM.search(str(e)):
      raise
    out = {"fits": False, "compile_s": round(time.time() - t0, 1), **oom_summary(str(e))}
    need = out.get("needed_bytes")
    out.update(
      peak_bytes=int((need or 0) + prog.resident_bytes),
      argument_bytes=0,
      temp_bytes=int(need or 0),
      output_bytes=0,
      alias_bytes=0,
      device_memory_bytes=int(out.get("available_bytes") or memory_bytes),
      flops=0.0,
      bytes_accessed=0.0,
      collective_bytes=0.0,
      time_lower_bound_s=0.0,
      resident_bytes=prog.resident_bytes,
    )
    return out
  compile_s = time.time() - t0
  mem = _memory(compiled)
  text = compiled.as_text()
  an = hlo.Analysis(text, default_trip_count=prog.loop_trips)
  total = an.total
  flops, nbytes = total.flops, total.bytes
  peak = mem["program_peak_bytes"] + prog.resident_bytes
  compute_s = flops / chip.peak_flops
  memory_s = nbytes / chip.hbm_bandwidth
  expected = prog.expected_flops / devices
  out = {
    "fits": peak <= memory_bytes,
    "compile_s": round(compile_s, 1),
    **mem,
    "resident_bytes": prog.resident_bytes,
    "peak_bytes": int(peak),
    "device_memory_bytes": int(memory_bytes),
    "flops": flops,
    "bytes_accessed": nbytes,
    "collective_bytes": total.collective_bytes,
    "collectives": total.to_json()["collectives"],
    "model_flops_per_device": prog.model_flops / devices,
    # Compiled FLOPs over k x N x tokens (programs.Program.expected_flops): 1 plus the
    # attention scores' share; far below 1 would mean work missing (a loop counted once).
    "expected_flops": expected,
    "flops_vs_expected": flops / expected if expected else None,
    "compute_time_s": compute_s,
    "memory_time_s": memory_s,
    "time_lower_bound_s": max(compute_s, memory_s),
    "xla_cost_analysis": _xla_cost(compiled),
    "loops": [
      {
        "name": l.name,
        "trip_count": l.trip_count,
        "trip_count_known": l.known,
        **_per_iter(l.per_iteration),
      }
      for l in an.loops
    ],
  }
  decode = an.main_loop()
  if prog.name == "sampler" and decode is not None:
    out["decode_step"] = {**_per_iter(decode.per_iteration), "steps": decode.trip_count}
  return out


def _per_iter(st) -> dict:
  j = st.to_json()
  return {
    "flops": j["flops"],
    "bytes_accessed": j["bytes_accessed"],
    "collective_bytes": j["collective_bytes"],
    "collectives": j["collectives"],
  }


@dataclasses.dataclass
class Settings:
  """The run's configs (from gin at the entry point)."""

  model: Any  # ModelConfig
  train: Any  # TrainConfig
  ppo: Any  # PPOConfig
  sft: Any  # SFTConfig
  mesh: Any  # MeshConfig


def compile_run(
  target: targets_lib.Target, settings: Settings, programs: tuple[str, ...] | None = None
) -> dict:
  """Compile the run's programs for `target`; the report as a JSON-ready dict."""
  import jax

  from stepcoder_jax import sharding
  from stepcoder_jax.compile import programs as programs_lib

  devices = target_devices(target)
  mesh = sharding.make_mesh(settings.mesh, devices)
  rules = sharding.make_rules(settings.mesh.rules)
  progs, shapes, resident = programs_lib.build(
    settings.model, settings.train, settings.ppo, settings.sft, mesh, rules
  )
  chip = target.spec
  memory = chip.hbm_bytes
  report: dict[str, Any] = {
    "topology": target.name,
    "platform": target.platform,
    "chip": chip.name,
    "devices": len(devices),
    "mesh": dict(mesh.shape),
    "chip_spec": {
      "peak_flops": chip.peak_flops,
      "hbm_bytes": chip.hbm_bytes,
      "hbm_bandwidth": chip.hbm_bandwidth,
      "source": chip.source,
    },
    "shapes": dataclasses.asdict(shapes),
    "resident_bytes": resident,
    "matmul_params": programs_lib.matmul_params(settings.model),
    "remat": settings.model.remat,
    "jax_version": jax.__version__,
    "versions": _versions(target),
    "programs": {},
  }
  for prog in progs:
    if programs and prog.name not in programs:
      continue
    _log.info("compiling %s for %s", prog.name, target.name)
    report["programs"][prog.name] = compile_program(prog, chip, memory, len(devices))
  ps = report["programs"]
  report["fits"] = all(p["fits"] for p in ps.values())
  iteration = [p for prog in progs if prog.in_iteration and (p := ps.get(prog.name))]
  report["iteration_time_lower_bound_s"] = sum(p["time_lower_bound_s"] for p in iteration)
  model_flops = sum(p.get("model_flops_per_device", 0.0) for p in iteration)
  lb = report["iteration_time_lower_bound_s"]
  report["mfu_bound"] = (model_flops / (chip.peak_flops * lb)) if lb and report["fits"] else None
  return report


def _versions(target: targets_lib.Target) -> dict[str, str]:
  import importlib.metadata as md

  names = ["jax", "jaxlib", "flax", "libtpu" if target.platform == "tpu" else "jax-cuda12-plugin"]
  out = {}
  for n in names:
    try:
      out[n] = md.version(n)
    except md.PackageNotFoundError:
      out[n] = "not installed"
  return out


def misfit_line(report: dict) -> str | None:
  """One line naming the first program that does not fit and what to change; None if all fit."""
  for name, p in report["programs"].items():
    if p["fits"]:
      continue
    gib = lambda x: f"{x / 2**30:.2f} GiB"
    need = p.get("peak_bytes") or p.get("needed_bytes") or 0
    have = p.get("device_memory_bytes") or report["chip_spec"]["hbm_bytes"]
    # Suggest rematerialization only to a run that does not use it already.
    remat = "" if report.get("remat") not in (None, False, "none") else "model.remat = True, "
    how = {
      "sampler": "fewer rollout rows (train.problems_per_iteration) or shorter "
      "train.max_new_tokens, or more devices along mesh.fsdp/mesh.tensor",
      "scoring": "fewer rollout rows or shorter prompts/responses, or a larger mesh",
      "ppo_update": f"more ppo.minibatches / ppo.grad_accum, {remat}shorter "
      "train.max_prompt_tokens/max_new_tokens, or a larger mesh "
      "(mesh.fsdp, mesh.tensor)",
      "sft_step": f"a smaller sft.batch_size or sft.max_len, {remat}or a larger mesh",
    }.get(name, "a larger mesh")
    said = f" (compiler: {p['compiler_message'][:160]})" if p.get("compiler_message") else ""
    return (
      f"{report['topology']}: {name} needs {gib(need)} per device, more than the "
      f"{gib(have)} of a {report['chip']}; try {how}{said}"
    )
  return None


def _gib(x: float) -> str:
  return f"{x / 2**30:.2f}"


def table(report: dict) -> str:
  """The report for a terminal: one row per program, then the iteration's bounds."""
  spec = report["chip_spec"]
  mesh = " x ".join(f"{k}={v}" for k, v in report["mesh"].items())
  lines = [
    f"{report['topology']}: {report['devices']} x {report['chip']} (mesh {mesh}); per chip "
    f"{spec['peak_flops'] / 1e12:.0f} TFLOP/s bf16, {_gib(spec['hbm_bytes'])} GiB, "
    f"{spec['hbm_bandwidth'] / 1e9:.0f} GB/s ({spec['source']})",
    f"{'program':<11} {'fits':>4} {'peak GiB':>9} {'args':>7} {'temps':>7} "
    f"{'TFLOP':>9} {'x kNT':>6} {'HBM GB':>8} {'coll. GB':>9} {'bound s':>9}",
  ]
  for name, p in report["programs"].items():
    if p.get("compiler_message") and not p["fits"]:
      lines.append(
        f"{name:<11} {'no':>4} {_gib(p['peak_bytes']):>9}  compiler: {p['compiler_message'][:100]}"
      )
      continue
    ratio = p.get("flops_vs_expected")
    lines.append(
      f"{name:<11} {'yes' if p['fits'] else 'NO':>4} {_gib(p['peak_bytes']):>9} "
      f"{_gib(p['argument_bytes']):>7} {_gib(p['temp_bytes']):>7} {p['flops'] / 1e12:>9.2f} "
      f"{(f'{ratio:.2f}' if ratio else '-'):>6} {p['bytes_accessed'] / 1e9:>8.1f} "
      f"{p['collective_bytes'] / 1e9:>9.2f} {p['time_lower_bound_s']:>9.3f}"
    )
    step = p.get("decode_step")
    if step:
      kinds = (
        ", ".join(f"{k} {v['operand_bytes'] / 1e6:.1f} MB" for k, v in step["collectives"].items())
        or "none"
      )
      lines.append(
        f"{'':<11} decode step (x{step['steps']}): {step['flops'] / 1e9:.2f} GFLOP, "
        f"HBM {step['bytes_accessed'] / 1e9:.2f} GB, collectives {kinds}"
      )
  lines.append(
    "per device; peak = the program's compiled peak + the state resident beside it; "
    "x kNT = FLOPs / (k x matmul params x tokens), k = 2 forward, 6 train, 8 remat; "
    "bound = max(FLOPs / peak, HBM bytes / bandwidth)"
  )
  lb = report["iteration_time_lower_bound_s"]
  mfu = report.get("mfu_bound")
  lines.append(
    f"iteration lower bound (sampler + scoring + update): {lb:.2f} s"
    + (f"; MFU bound {100 * mfu:.1f}%" if mfu else "")
  )
  return "\n".join(lines)
